"""The int8 search (stage `export`, `export.precision: int8`): which weight MatMuls an int8 model quantizes.

`policy` chooses the mix (full int8, then scale migration, then float fallback) and `trials` quantizes and
judges one mix with the parity gate's own judgement (`stages.verify`); `smoothing` migrates activation scales
into weights, `sensitivity` replays onnxruntime's int8 arithmetic to rank MatMuls. `stages.graph.precision`
stays the converter every precision goes through.
"""
