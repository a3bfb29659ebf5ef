"""Does onnxruntime's int8 use this CPU's matrix units? The tile permission, and GEMM rates side by side.

    python -m tools.bench.int8_gemm              # prints the AMX tile permission and a table of GFLOP/s

AMX needs Linux's permission for the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`), which onnxruntime's
MLAS requests when it selects its AMX int8 kernels: printed before and after an int8 GEMM. Then, for a few GEMM
shapes, the rate of the bare u8 x s8 -> int32 product (`MatMulInteger`), of `DynamicQuantizeMatMul` (what the
int8 export runs: quantize the input, multiply, back to float) and of fp32 `MatMul`, counting 2 FLOP per
multiply-add, median of `--repeats` runs, on `--threads` threads, with the CPU's flags.

A last column times per-token activation scales (issue 38's lever): each input row quantized on its own
(symmetric int8 shifted to uint8, `QuantizeLinear` per row), then `MatMulIntegerToFloat` with a scale per row
and one per column: the closest onnxruntime comes to per-token int8 (it has no kernel that finds per-row scales). Its rate against
`DynamicQuantizeMatMul`'s is what per-token int8 costs or saves per GEMM without a native kernel.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stages.core.cpu import describe_cpu
from tools.bench.settings import all_threads
from tools.cli import option, parse

if TYPE_CHECKING:  # imported in `main` after the permission is first read: importing it sets MLAS up
    import onnxruntime as ort

SHAPES = ((2048, 768, 3072), (2048, 3072, 768), (512, 768, 768), (8192, 768, 3072))  # M, K, N
SYS_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, XTILEDATA = 158, 0x1022, 18  # x86_64 Linux


@dataclass(frozen=True)
class Int8Gemm:
    """The int8 GEMM probe's settings."""

    threads: int = option(help="onnxruntime's threads (default: all)", factory=all_threads)
    repeats: int = option(15, "timed runs per GEMM; the median counts")


def tile_permission() -> str:
    """Whether this process may use AMX tiles (the XTILEDATA bit of `ARCH_GET_XCOMP_PERM`), as Linux reports it."""
    features = ctypes.c_uint64(0)
    if ctypes.CDLL(None, use_errno=True).syscall(SYS_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, ctypes.byref(features)) != 0:
        return "not reported (not x86_64 Linux, or a kernel without AMX support)"
    return f"{'granted' if features.value >> XTILEDATA & 1 else 'not granted'} (features {features.value:#x})"


def gemm_session(
    node: onnx.NodeProto, left: onnx.ValueInfoProto, weight: np.ndarray, threads: int
) -> ort.InferenceSession:
    """A one-node graph `node(a, w, ...)` with `w` (and a per-column scale for DynamicQuantizeMatMul) as weights."""
    output = TensorProto.INT32 if node.op_type == "MatMulInteger" else TensorProto.FLOAT
    weights = [numpy_helper.from_array(weight, "w")]
    if node.op_type == "DynamicQuantizeMatMul":
        weights.append(numpy_helper.from_array(np.full([weight.shape[1]], 0.01, np.float32), "s"))
    graph = helper.make_graph([node], "gemm", [left], [helper.make_tensor_value_info("y", output, None)], weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=opsets, ir_version=9)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def per_token_session(weight: np.ndarray, threads: int) -> ort.InferenceSession:
    """`a [m x k] -> float [m x n]`: `a`'s rows quantized each by its own scale (max |row| / 127, zero point 128),
    multiplied by the int8 weight `w`, scaled back per row and per column."""
    k, n = weight.shape
    nodes = [
        helper.make_node("Abs", ["a"], ["magnitude"]),
        helper.make_node("ReduceMax", ["magnitude", "last_axis"], ["row_max"], keepdims=1),
        helper.make_node("Max", ["row_max", "tiny"], ["row_range"]),  # an all-zero row keeps a finite scale
        helper.make_node("Div", ["row_range", "int8_max"], ["row_scale"]),  # [m, 1]
        helper.make_node("Squeeze", ["row_scale", "last_axis"], ["row_scales"]),  # [m]
        helper.make_node("Shape", ["row_scales"], ["rows"]),
        helper.make_node("Expand", ["midpoint", "rows"], ["row_zero_points"]),
        helper.make_node("QuantizeLinear", ["a", "row_scales", "row_zero_points"], ["q"], axis=0),
        helper.make_node(  # the product, then each row's [m, 1] and each column's [n] scale
            "MatMulIntegerToFloat", ["q", "w", "row_scale", "s", "midpoint"], ["y"], domain="com.microsoft"
        ),
    ]
    constants = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.full([n], 0.01, np.float32), "s"),
        numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
        numpy_helper.from_array(np.array(1e-8, np.float32), "tiny"),
        numpy_helper.from_array(np.array(127.0, np.float32), "int8_max"),
        numpy_helper.from_array(np.array(128, np.uint8), "midpoint"),
    ]
    left = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, k])
    graph = helper.make_graph(
        nodes, "per_token", [left], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], constants
    )
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=9)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def rate(session: ort.InferenceSession, feed: dict[str, np.ndarray], flops: float, repeats: int) -> float:
    """GFLOP/s: the median of `repeats` runs after three untimed ones."""
    for _ in range(3):
        session.run(None, feed)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - started)
    return flops / float(np.median(seconds)) / 1e9


def shape_rates(m: int, k: int, n: int, settings: Int8Gemm) -> tuple[float, float, float, float]:
    """MatMulInteger, DynamicQuantizeMatMul, fp32 MatMul and per-token int8 GFLOP/s for [m x k] x [k x n]."""
    rng = np.random.default_rng(0)
    int8_weight = rng.integers(-127, 128, (k, n)).astype(np.int8)
    float_input = rng.standard_normal((m, k)).astype(np.float32)
    uint8_input = rng.integers(0, 256, (m, k)).astype(np.uint8)
    float_left = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, k])
    integer = gemm_session(
        helper.make_node("MatMulInteger", ["a", "w"], ["y"]),
        helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k]), int8_weight, settings.threads,
    )  # fmt: skip
    dynamic = gemm_session(
        helper.make_node("DynamicQuantizeMatMul", ["a", "w", "s"], ["y"], domain="com.microsoft"),
        float_left, int8_weight, settings.threads,
    )  # fmt: skip
    fp32 = gemm_session(
        helper.make_node("MatMul", ["a", "w"], ["y"]), float_left, rng.standard_normal((k, n)).astype(np.float32),
        settings.threads,
    )  # fmt: skip
    flops = 2.0 * m * k * n
    return (
        rate(integer, {"a": uint8_input}, flops, settings.repeats),
        rate(dynamic, {"a": float_input}, flops, settings.repeats),
        rate(fp32, {"a": float_input}, flops, settings.repeats),
        rate(per_token_session(int8_weight, settings.threads), {"a": float_input}, flops, settings.repeats),
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(Int8Gemm, argv, __doc__)
    print(f"AMX tile permission before onnxruntime is imported: {tile_permission()}")
    import onnxruntime as ort

    print(f"CPU: {describe_cpu()}; onnxruntime {ort.__version__}, {settings.threads} threads")
    rows = [(shape, shape_rates(*shape, settings)) for shape in SHAPES]
    print(f"AMX tile permission after onnxruntime's int8 GEMMs: {tile_permission()}")
    print("| GEMM | MatMulInteger (u8 x s8 -> int32) | DynamicQuantizeMatMul | fp32 MatMul | per-token int8 |")
    print("|---|---|---|---|---|")
    for (m, k, n), (integer, dynamic, fp32, per_token) in rows:
        print(f"| [{m}x{k}] x [{k}x{n}] | {integer:,.0f} | {dynamic:,.0f} | {fp32:,.0f} | {per_token:,.0f} |")


if __name__ == "__main__":
    main()
