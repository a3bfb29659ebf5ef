"""Scoring text datasets with an exported model: read -> tokenise -> window -> batch -> ONNX -> merge -> spans -> part.

Nothing here imports torch or transformers.
"""
