"""An ONNX file exported earlier (by the seed's notes, another tool, or by hand), adopted instead of exporting.

What older exports hold is accepted: int32 or int64 inputs, `token_type_ids` declared whether or not the model
uses it, or absent; any opset the installed onnxruntime runs; TorchScript or dynamo graphs; weights in external
data files. The file is copied whole (its weights beside it as `model.onnx.data`, as every export has them), checked
to take the torch model's inputs with dynamic batch and sequence axes and to give its label count, and
converted to `export.precision` when it is fp32. The parity stage then checks it against the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from stages.core.errors import UserError
from stages.graph.exporter import SINGLE_FILE_LIMIT
from stages.graph.metadata import WEIGHTS_DATA, describe_io
from stages.model.checkpoint import sha256_of
from stages.model.directory import HeadSpec

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INT8_OPS = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "DynamicQuantizeMatMul"})


def read_onnx_file(path: Path) -> onnx.ModelProto:
    """The ONNX model in `path` with its external data; a `UserError` naming `export.onnx_file` if it cannot be read."""
    if not path.is_file():
        raise UserError(f"export.onnx_file = {path} not found; point it at an .onnx file, or set it to null")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=False)
    except (DecodeError, onnx.checker.ValidationError, OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(
            f"export.onnx_file = {path} cannot be read as ONNX ({type(error).__name__}: {reason[:200]}); "
            "copy or export it again"
        ) from None
    return model


def graph_precision(model: onnx.ModelProto) -> str:
    """`int8` (quantized MatMuls), `fp16` (float16 weights) or `fp32`."""
    if any(node.op_type in INT8_OPS for node in model.graph.node):
        return "int8"
    if any(initializer.data_type == onnx.TensorProto.FLOAT16 for initializer in model.graph.initializer):
        return "fp16"
    return "fp32"


def adoption_problems(model: onnx.ModelProto, spec: HeadSpec) -> list[str]:
    """What keeps `model` from serving as the torch model described by `spec`: inputs, axes, outputs."""
    inputs, outputs = describe_io(model.graph.input), describe_io(model.graph.output)
    names = [entry["name"] for entry in inputs]
    problems = []
    unknown = [name for name in names if name not in INPUTS]
    needed = [name for name in ("input_ids", "attention_mask", *spec.input_names) if name not in names]
    if unknown or needed:
        problems.append(
            f"inputs {names}: the torch model takes {list(spec.input_names)}"
            + (f" (unknown: {unknown})" if unknown else "")
            + (f" (missing: {sorted(set(needed))})" if needed else "")
        )
    for entry in inputs:
        if len(entry["shape"]) != 2 or any(isinstance(dim, int) and dim > 0 for dim in entry["shape"]):
            problems.append(
                f"input {entry['name']} has shape {entry['shape']}: export it with dynamic batch and sequence axes"
            )
    shapes = [entry["shape"] for entry in outputs]
    labels = shapes[0][2] if len(shapes) == 1 and len(shapes[0]) == 3 else None  # a symbolic dim is checked at parity
    if labels is None or (isinstance(labels, int) and labels not in (0, spec.num_labels)):
        described = [(entry["name"], entry["shape"]) for entry in outputs]
        problems.append(
            f"outputs {described}: the torch model gives one [batch, sequence, {spec.num_labels}] tensor of logits "
            "(model.num_labels)"
        )
    return problems


def adopt_onnx(source: Path, target: Path, spec: HeadSpec, precision: str) -> dict[str, Any]:
    """Copy the ONNX file `source` to `target` if it can serve the model of `spec` at `precision`; what it is."""
    model = read_onnx_file(source)
    if problems := adoption_problems(model, spec):
        raise UserError(f"export.onnx_file = {source} does not fit the checkpoint's model: " + "; ".join(problems))
    found = graph_precision(model)
    if found != precision and found != "fp32":
        raise UserError(
            f"export.onnx_file = {source} is a {found} model but export.precision is {precision}; "
            f"set export.precision: {found}"
        )
    large = sum(len(initializer.raw_data) for initializer in model.graph.initializer) > SINGLE_FILE_LIMIT
    onnx.save_model(model, str(target), save_as_external_data=large, location=WEIGHTS_DATA)
    return {
        "source_onnx": str(source),
        "source_onnx_sha256": sha256_of(source),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "source_precision": found,
    }
