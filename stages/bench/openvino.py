"""OpenVINO serving the project's own ONNX exports: the peer runtime the benchmark measures beside onnxruntime.

Its CPU plugin runs f32 everywhere and bf16 where the CPU reports it (`OPTIMIZATION_CAPABILITIES`); our int8
export uses onnxruntime's contrib ops (DynamicQuantizeMatMul, MatMulIntegerToFloat), which OpenVINO may not
read: then that variant is skipped, with OpenVINO's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from stages.bench.variants import Skipped, Variant
from stages.core.cpu import has_native_bf16

INSTALL = "pip install -e '.[openvino]'"


def openvino_runner(compiled, path: Path) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """One padded batch through a compiled OpenVINO model; inputs in the ONNX graph's order (a port's tensor
    names may be a node's output name), float32 logits."""
    request = compiled.create_infer_request()
    names = [graph_input.name for graph_input in onnx.load(path, load_external_data=False).graph.input]

    def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
        outputs = request.infer([np.ascontiguousarray(arrays[name], dtype=np.int64) for name in names])
        return np.array(outputs[compiled.output(0)], dtype=np.float32)  # a copy: the request reuses its buffers

    return run


def openvino_variants(fp32_path: Path, int8_path: Path, threads: int) -> tuple[list[Variant], list[Skipped]]:
    """OpenVINO f32 (and bf16 where the CPU has it) on the fp32 export, and on the int8 export if it reads it."""
    try:
        import openvino as ov
    except ImportError:
        return [], [Skipped("openvino", f"openvino is not installed ({INSTALL})")]
    core = ov.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    version = ov.__version__.split("-")[0]
    variants, skipped = [], []
    bf16_peak = "torch_bf16" if has_native_bf16() else None  # measured only where the CPU has bf16 instructions
    for precision, capability, peak in (("f32", "FP32", "onnxruntime_fp32"), ("bf16", "BF16", bf16_peak)):
        if capability not in capabilities:
            skipped.append(Skipped(f"openvino-{precision}", f"the CPU plugin reports no {capability} here"))
            continue
        compiled = core.compile_model(str(fp32_path), "CPU", {**config, "INFERENCE_PRECISION_HINT": precision})
        note = f"OpenVINO {version} on the fp32 export"
        variants.append(
            Variant(
                f"openvino-{precision}", precision, "openvino cpu", openvino_runner(compiled, fp32_path), peak, note
            )
        )
    try:
        compiled = core.compile_model(str(int8_path), "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"})
    except RuntimeError as error:
        reason = (str(error).strip().splitlines() or ["cannot read it"])[0][:200]
        skipped.append(Skipped("openvino-int8", f"OpenVINO {version} cannot read the int8 export: {reason}"))
    else:
        note = f"OpenVINO {version} on the int8 export"
        variants.append(
            Variant(
                "openvino-int8",
                "int8 dynamic",
                "openvino cpu",
                openvino_runner(compiled, int8_path),
                "onnxruntime_int8",
                note,
            )
        )
    return variants, skipped
