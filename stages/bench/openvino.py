"""OpenVINO serving the project's own ONNX exports: the peer runtime the benchmark measures beside onnxruntime.

Its CPU plugin runs f32 everywhere and bf16 where the CPU reports it (`OPTIMIZATION_CAPABILITIES`); our int8
export uses onnxruntime's contrib ops (DynamicQuantizeMatMul, MatMulIntegerToFloat): where OpenVINO cannot
read them, that variant is skipped with its reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from stages.bench.variants import Skipped, Variant
from stages.core.cpu import has_native_bf16
from stages.core.errors import UserError
from stages.graph.runners import openvino_runner


def openvino_variants(fp32_path: Path, int8_path: Path, threads: int) -> tuple[list[Variant], list[Skipped]]:
    """OpenVINO f32 (and bf16 where the CPU has it) on the fp32 export, and f32 on the int8 export."""
    if importlib.util.find_spec("openvino") is None:
        return [], [Skipped("openvino", "openvino is not installed (pip install -e '.[openvino]')")]
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    bf16_peak = "torch_bf16" if has_native_bf16() else None  # measured only where the CPU has bf16 instructions
    variants, skipped = [], []
    for name, path, precision, capability, peak in (
        ("openvino-f32", fp32_path, "f32", "FP32", "onnxruntime_fp32"),
        ("openvino-bf16", fp32_path, "bf16", "BF16", bf16_peak),
        ("openvino-int8", int8_path, "f32", "INT8", "onnxruntime_int8"),
    ):
        if capability not in capabilities:
            skipped.append(Skipped(name, f"the CPU plugin reports no {capability} here"))
            continue
        try:
            runner = openvino_runner(path, threads, precision)
        except UserError as error:
            skipped.append(Skipped(name, str(error)))
            continue
        precision_name = "int8 dynamic" if path == int8_path else precision
        note = f"{runner.provider} on the {'int8' if path == int8_path else 'fp32'} export"
        variants.append(Variant(name, precision_name, "openvino cpu", runner.logits, peak, note))
    return variants, skipped
