"""Checkpoint -> verified ONNX -> dataset scoring, one module per DVC stage."""
