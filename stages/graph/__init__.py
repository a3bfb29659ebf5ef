"""The ONNX side: export, served precision, self-description, and onnxruntime sessions and feeds.

`session` imports neither torch nor transformers (scoring runs on it alone); keep this file empty so
importing it stays cheap.
"""
