"""Checkpoint -> verified ONNX -> dataset scoring.

`stages/<stage>.py` are the five DVC stages (`python -m stages.<stage>`); the library below them:
`core` (params, errors, atomic writes), `model` (checkpoints, the torch model), `graph` (export,
precision, onnxruntime sessions), `scoring` (datasets, tokens, batching, engines), `verify` (parity),
`bench` (benchmarks) and `demo` (the embedded demo's artefacts).
"""
