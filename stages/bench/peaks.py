"""The limit measured on the machine at hand: one FFN-sized MatMul in onnxruntime fp32, torch fp32 and torch bf16."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from stages.core.params import RuntimeParams
from stages.graph.session import CPU, create_session

PEAK_SHAPE = (2048, 768, 3072)  # [m x k] x [k x n]: an FFN-sized product
PEAK_WARMUP, PEAK_REPEATS = 2, 5
PEAK_IR_VERSION = 8  # readable by every onnxruntime this project supports (onnx 1.23 writes 14 by default)


def timed_samples(call: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def matmul_model(right: np.ndarray) -> bytes:
    """A one-MatMul ONNX model: input `a` [m x k] times the constant `right` [k x n]."""
    (k, n), m = right.shape, PEAK_SHAPE[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "matmul_peak",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(right, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=PEAK_IR_VERSION)
    return model.SerializeToString()


def matmul_peak_samples(threads: int) -> dict[str, list[float]]:
    """Seconds of one [m x k] x [k x n] product in onnxruntime fp32, torch fp32 and torch bf16."""
    m, k, n = PEAK_SHAPE
    rng = np.random.default_rng(0)
    left = rng.standard_normal((m, k), dtype=np.float32)
    right = rng.standard_normal((k, n), dtype=np.float32)
    session = create_session(matmul_model(right), RuntimeParams((CPU,), threads, "all"))
    torch_left, torch_right = torch.from_numpy(left), torch.from_numpy(right)
    bf16_left, bf16_right = torch_left.bfloat16(), torch_right.bfloat16()
    with torch.inference_mode():
        return {
            "onnxruntime_fp32": timed_samples(lambda: session.run(None, {"a": left}), PEAK_WARMUP, PEAK_REPEATS),
            "torch_fp32": timed_samples(lambda: torch_left @ torch_right, PEAK_WARMUP, PEAK_REPEATS),
            "torch_bf16": timed_samples(lambda: bf16_left @ bf16_right, PEAK_WARMUP, PEAK_REPEATS),
        }


def summarise_peaks(samples: list[dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """GFLOP/s per kind: the median over every sample (the peak measured twice: before and after the rounds)."""
    m, k, n = PEAK_SHAPE
    flops = 2.0 * m * k * n
    peaks = {}
    for kind in samples[0]:
        seconds = np.concatenate([sample[kind] for sample in samples])
        peaks[kind] = {
            "gflop_per_s": round(flops / float(np.median(seconds)) / 1e9, 1),
            "best_gflop_per_s": round(flops / float(seconds.min()) / 1e9, 1),
            "samples": len(seconds),
        }
    return peaks
