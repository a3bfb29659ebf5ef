"""Served precision: the fp32 export turned into a dynamic-int8 (CPU) or fp16 (GPU) model, in place.

int8 depends on the CPU that serves it: without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's u8s8
kernels can saturate, so weights are quantized to 7 bits there (`reduce_range`), as onnxruntime's
quantization docs advise. `export.int8_target` names that CPU; `auto` means the one exporting.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from stages.core.cpu import describe_cpu, has_vnni
from stages.core.errors import UserError, raised_in_project

log = logging.getLogger(__name__)

# Kept in fp32 in the fp16 model: normalisation and softmax accumulate sums that overflow fp16
# (mDeBERTa is prone to it); the graph's inputs and outputs stay as they are (`keep_io_types`).
FP16_FP32_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """The quantizer logs one INFO line per tensor on the root logger; keep only its warnings."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def resolve_int8_target(target: str) -> str:
    """`vnni` or `no_vnni`: as given, or for `auto` what this machine's CPU has."""
    if target != "auto":
        return target
    return "vnni" if has_vnni() else "no_vnni"


def constant_values(graph: onnx.GraphProto) -> set[str]:
    """Names of the values computable from initializers alone (weights, and Transposes or Casts of them)."""
    constant = {initializer.name for initializer in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(name in constant for name in node.input if name)):
            constant.update(node.output)
    return constant


def matmul_census(model: onnx.ModelProto) -> dict[str, int]:
    """MatMuls by kind: weight (B constant) in float, quantized (MatMulInteger), activation x activation."""
    constant = constant_values(model.graph)
    counts = Counter(
        "quantized_weight_matmuls"
        if node.op_type == "MatMulInteger"
        else "float_weight_matmuls"
        if node.input[1] in constant
        else "activation_matmuls"
        for node in model.graph.node
        if node.op_type in ("MatMul", "MatMulInteger")
    )
    return {key: counts[key] for key in ("quantized_weight_matmuls", "float_weight_matmuls", "activation_matmuls")}


def prepare_for_quantization(source: Path, prepared: Path) -> None:
    """Shape inference and constant folding, so every weight reaches its MatMul as an initializer.

    Symbolic shape inference fails on some graphs (BERT's attention mask arithmetic, some exporters'
    Range nodes); ONNX shape inference alone is then enough for dynamic quantization.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(prepared))
    except Exception as error:  # any failure of onnxruntime's symbolic pass has the same fallback
        if raised_in_project(error):
            raise
        log.info("symbolic shape inference failed (%s); using ONNX shape inference", str(error) or type(error).__name__)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)


def quantize_int8(path: Path, int8_target: str) -> dict[str, Any]:
    """Dynamic int8 with per-channel weights; 7-bit weights for a CPU without VNNI. Returns what it did."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = resolve_int8_target(int8_target)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch, quiet_root_logger():
        prepared = Path(scratch) / "prepared.onnx"
        prepare_for_quantization(path, prepared)
        weights = matmul_census(onnx.load(str(prepared), load_external_data=False))["float_weight_matmuls"]
        quantize_dynamic(
            str(prepared), str(path), weight_type=QuantType.QInt8, per_channel=True, reduce_range=target == "no_vnni"
        )
    census = matmul_census(onnx.load(str(path), load_external_data=False))
    report = {
        "int8_target": target,
        "int8_target_chosen_by": f"this CPU: {describe_cpu()}" if int8_target == "auto" else "export.int8_target",
        "reduce_range": target == "no_vnni",
        "weight_matmuls": weights,
        **census,
    }
    log.info(
        "int8 for %s CPUs%s: %d of %d weight MatMuls quantized, %d left in float; %d activation x activation "
        "MatMuls stay fp32",
        target,
        " (7-bit weights)" if report["reduce_range"] else "",
        census["quantized_weight_matmuls"],
        weights,
        census["float_weight_matmuls"],
        census["activation_matmuls"],
    )
    if census["float_weight_matmuls"]:
        log.warning(
            "%d weight MatMuls were not quantized: the int8 model is partly fp32", census["float_weight_matmuls"]
        )
    return report


def convert_fp16(path: Path) -> dict[str, Any]:
    """fp16 weights and compute, fp32 inputs/outputs, overflow-prone ops kept in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)  # it logs whole node protos
    model = convert_float_to_float16(
        onnx.load(str(path)), keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_FP32_OPS]
    )
    drop_repeated_casts(model.graph)  # a deduplicated initializer gets one Cast per use, all with one name
    OnnxModel(model).topological_sort()  # the converter appends its Cast nodes at the end
    onnx.save(model, str(path))
    return {"fp32_ops": sum(node.op_type in FP16_FP32_OPS for node in model.graph.node)}


def drop_repeated_casts(graph: onnx.GraphProto) -> None:
    """Remove Cast nodes that repeat an earlier Cast exactly (same input, output and target type)."""
    seen = set()
    kept = []
    for node in graph.node:
        key = (node.op_type, tuple(node.input), tuple(node.output), node.attribute[0].i if node.attribute else None)
        if node.op_type == "Cast" and key in seen:
            continue
        seen.add(key)
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def apply_precision(path: Path, precision: str, int8_target: str) -> dict[str, Any]:
    """Convert the fp32 model at `path` to `precision`; returns what the conversion did.

    A graph the converter cannot handle is a `UserError` that says to serve fp32 instead.
    """
    if precision == "fp32":
        return {}
    try:
        return quantize_int8(path, int8_target) if precision == "int8" else convert_fp16(path)
    except Exception as error:  # the converters raise many types for a graph they cannot convert; ours are bugs
        if raised_in_project(error):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(
            f"export.precision = {precision} cannot convert this graph ({type(error).__name__}: {first_line[:300]}); "
            "use export.precision: fp32, or the other export.exporter"
        ) from error
