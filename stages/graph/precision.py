"""Served precision: the fp32 export turned into a dynamic-int8 (CPU) or fp16 (GPU) model, in place.

int8 depends on the CPU that serves it: without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's u8s8
kernels can saturate, so weights are quantized to 7 bits there (`reduce_range`), as onnxruntime's
quantization docs advise. `export.int8_target` names that CPU; `auto` means the one exporting.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from stages.core.cpu import describe_cpu, has_vnni
from stages.core.errors import UserError, raised_in_project
from stages.graph.matmuls import matmul_census

log = logging.getLogger(__name__)

# Kept in fp32 in the fp16 model: normalisation and softmax accumulate sums that overflow fp16
# (mDeBERTa is prone to it); the graph's inputs and outputs stay as they are (`keep_io_types`).
FP16_FP32_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")
# (prepared graph, exported fp32 graph, resolved int8 target) -> what it chose. It writes the int8 model over
# the exported graph; `full_int8` quantizes everything, the export stage's mixer keeps what the gate needs float.
Int8Mixer = Callable[[Path, Path, str], dict[str, Any]]


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


@contextmanager
def converter_errors(precision: str) -> Iterator[None]:
    """A converter library failing on this graph is a `UserError` that says to serve fp32 instead."""
    try:
        yield
    except Exception as error:  # the converters raise many types, each meaning "cannot convert"; ours are bugs
        if raised_in_project(error):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(
            f"export.precision = {precision} cannot convert this graph ({type(error).__name__}: {first_line[:300]}); "
            "use export.precision: fp32, or the other export.exporter"
        ) from error


def resolve_int8_target(target: str) -> str:
    """`vnni` or `no_vnni`: as given, or for `auto` what this machine's CPU has."""
    if target != "auto":
        return target
    return "vnni" if has_vnni() else "no_vnni"


def prepare_for_quantization(source: Path, prepared: Path) -> None:
    """Shape inference and constant folding, so every weight reaches its MatMul as an initializer.

    Symbolic shape inference fails on some graphs (BERT's attention mask arithmetic, some exporters'
    Range nodes); ONNX shape inference alone is then enough for dynamic quantization. A failed symbolic
    pass saves its partial graph into the working directory, so it runs in the prepared graph's directory.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, prepared = source.resolve(), prepared.resolve()
    with converter_errors("int8"), quiet_root_logger(), contextlib.chdir(prepared.parent):
        try:
            quant_pre_process(str(source), str(prepared))
        except Exception as error:  # any failure of the symbolic pass has the same fallback
            if raised_in_project(error):
                raise
            reason = str(error) or type(error).__name__
            log.info("symbolic shape inference failed (%s); using ONNX shape inference", reason)
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)


def quantize_prepared(prepared: Path, output: Path, target: str, keep_float: Collection[str] = ()) -> None:
    """Dynamic int8 of a prepared graph, per-channel weights (7-bit for `no_vnni`); `keep_float` names nodes
    (weight MatMuls, the word embedding's Gather) left in float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with converter_errors("int8"), quiet_root_logger():
        quantize_dynamic(
            str(prepared),
            str(output),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=target == "no_vnni",
            nodes_to_exclude=list(keep_float),
        )


def full_int8(prepared: Path, exported: Path, target: str) -> dict[str, Any]:
    """The int8 mix that quantizes every weight MatMul and the word embedding."""
    quantize_prepared(prepared, exported, target)
    return {"mix": "full", "float_matmuls": []}


def quantize_int8(path: Path, int8_target: str, mixer: Int8Mixer = full_int8) -> dict[str, Any]:
    """Dynamic int8 with per-channel weights, 7-bit for a CPU without VNNI, mixed with float where `mixer`
    says; returns what it did."""
    target = resolve_int8_target(int8_target)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        prepare_for_quantization(path, prepared)
        weights = matmul_census(onnx.load(str(prepared), load_external_data=False))["float_weight_matmuls"]
        mix = mixer(prepared, path, target)
    census = matmul_census(onnx.load(str(path), load_external_data=False))
    report = {
        "int8_target": target,
        "int8_target_chosen_by": f"this CPU: {describe_cpu()}" if int8_target == "auto" else "export.int8_target",
        "reduce_range": target == "no_vnni",
        "weight_matmuls": weights,
        **census,
        **mix,
    }
    kept = [entry["module"] for entry in mix["float_matmuls"]]
    log.info(
        "int8 for %s CPUs%s: %d of %d weight MatMuls quantized, %d kept float%s; %d activation x activation "
        "MatMuls stay fp32",
        target,
        " (7-bit weights)" if report["reduce_range"] else "",
        census["quantized_weight_matmuls"],
        weights,
        len(kept),
        f" ({', '.join(kept)})" if kept else "",
        census["activation_matmuls"],
    )
    if unexpected := census["float_weight_matmuls"] - len(kept):
        log.warning("%d weight MatMuls were not quantized: the int8 model is partly fp32", unexpected)
    return report


def convert_fp16(path: Path) -> dict[str, Any]:
    """fp16 weights and compute, fp32 inputs/outputs, overflow-prone ops kept in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)  # it logs whole node protos
    with converter_errors("fp16"):
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


def apply_precision(path: Path, precision: str, int8_target: str, int8_mixer: Int8Mixer = full_int8) -> dict[str, Any]:
    """Convert the fp32 model at `path` to `precision` (int8: mixed by `int8_mixer`); returns what the conversion did.

    A graph the converter cannot handle is a `UserError` that says to serve fp32 instead.
    """
    if precision == "fp32":
        return {}
    return quantize_int8(path, int8_target, int8_mixer) if precision == "int8" else convert_fp16(path)
