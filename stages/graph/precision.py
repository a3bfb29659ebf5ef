"""Served precision: the fp32 export turned into a dynamic-int8 (CPU) or fp16 (GPU) model, in place."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path

import onnx

log = logging.getLogger(__name__)

# Kept in fp32 in the fp16 model: normalisation and softmax accumulate sums that overflow fp16
# (mDeBERTa is prone to it); the graph's inputs and outputs stay as they are (`keep_io_types`).
FP16_FP32_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")


def quantize_int8(path: Path) -> dict[str, int]:
    """Dynamic int8 with per-channel weights, after shape inference so every weight MatMul is quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(path), str(prepared))
        except AssertionError as error:  # symbolic shape inference fails on some exporters' Range nodes
            log.warning("symbolic shape inference failed (%s); using ONNX shape inference only", error or "assertion")
            quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8, per_channel=True)
    operators = Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)
    counts = {"quantized_matmuls": operators["MatMulInteger"], "float_matmuls": operators["MatMul"]}
    log.info(
        "int8: %(quantized_matmuls)d MatMuls quantized, %(float_matmuls)d activation x activation MatMuls kept in fp32",
        counts,
    )
    return counts


def convert_fp16(path: Path) -> dict[str, int]:
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


def apply_precision(path: Path, precision: str) -> dict[str, int]:
    """Convert the fp32 model at `path` to `precision`; returns what the conversion did."""
    if precision == "int8":
        return quantize_int8(path)
    if precision == "fp16":
        return convert_fp16(path)
    return {}
