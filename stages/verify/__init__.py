"""Verification: does the ONNX model compute what the torch model computes (stage `parity`)."""
