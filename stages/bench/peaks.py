"""The limit measured on the machine at hand: one FFN-sized MatMul in onnxruntime fp32 and int8, and in torch.

The int8 figure is fp32-equivalent: the same product's FLOPs over its time, so an int8 engine's
achieved GFLOP/s and its fraction of this peak read on the same scale as fp32's.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from stages.core.cpu import has_native_bf16, has_vnni
from stages.core.params import RuntimeParams
from stages.graph.precision import quiet_root_logger
from stages.graph.session import create_session

PEAK_SHAPE = (2048, 768, 3072)  # [m x k] x [k x n]: an FFN-sized product
PEAK_WARMUP, PEAK_REPEATS = 2, 5
PEAK_KINDS = ("onnxruntime_fp32", "onnxruntime_int8", "torch_fp32", "torch_bf16")
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


def int8_matmul_model(right: np.ndarray) -> bytes:
    """The one-MatMul model quantized as the export stage quantizes for this CPU (dynamic, per-channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as scratch, quiet_root_logger():
        source, target = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        source.write_bytes(matmul_model(right))
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, reduce_range=not has_vnni())
        return target.read_bytes()


def matmul_peak_samples(runtime: RuntimeParams) -> dict[str, list[float]]:
    """Seconds of one [m x k] x [k x n] product in onnxruntime fp32 and dynamic int8, torch fp32, and torch bf16
    where this CPU has native bf16 (elsewhere torch emulates it, for minutes)."""
    m, k, n = PEAK_SHAPE
    rng = np.random.default_rng(0)
    left = rng.standard_normal((m, k), dtype=np.float32)
    right = rng.standard_normal((k, n), dtype=np.float32)
    fp32_session = create_session(matmul_model(right), runtime)
    int8_session = create_session(int8_matmul_model(right), runtime)
    torch_left, torch_right = torch.from_numpy(left), torch.from_numpy(right)
    calls: dict[str, Callable[[], object]] = {
        "onnxruntime_fp32": lambda: fp32_session.run(None, {"a": left}),
        "onnxruntime_int8": lambda: int8_session.run(None, {"a": left}),
        "torch_fp32": lambda: torch_left @ torch_right,
    }
    if has_native_bf16():
        bf16_left, bf16_right = torch_left.bfloat16(), torch_right.bfloat16()
        calls["torch_bf16"] = lambda: bf16_left @ bf16_right
    with torch.inference_mode():
        return {kind: timed_samples(call, PEAK_WARMUP, PEAK_REPEATS) for kind, call in calls.items()}


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
