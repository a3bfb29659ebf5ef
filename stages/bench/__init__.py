"""Benchmarks that print numbers: the serving engines (stage `benchmark`), length-aware batching, Ray scaling."""
