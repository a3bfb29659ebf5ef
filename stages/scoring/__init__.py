"""Scoring text datasets with an exported model: read -> tokenise -> window -> batch -> ONNX -> merge -> spans -> part.

Here: tokens, windows, batching, the scoring of a block (`score`), spans, quality against gold (`quality`), the
run's tallies (`metrics`), the served model (`served`) and engine `local`. Rooms: `datasets` (reading),
`storage` (locations, leases, parts, the output), `cluster` (engine `ray`). Nothing here imports torch or
transformers.
"""
