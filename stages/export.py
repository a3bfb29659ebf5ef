"""Stage `export`: the normalised model to a self-describing ONNX model with dynamic batch and sequence axes.

The ONNX directory is self-contained for serving: `model.onnx` (plus `model.onnx.data` for models
over 2 GB), the tokenizer files, and `model.json`, a sidecar repeating the metadata stored in the
ONNX model itself (exporter, opset, input names and dtypes, labels, max_length, truncation side,
library versions).
"""

from __future__ import annotations

import json
import logging
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import onnx
import torch
from transformers import AutoTokenizer

from stages.atomic import atomic_directory
from stages.errors import UserError, run_stage
from stages.model import CustomModel, GraphInputs, HeadSpec, load_model_dir
from stages.params import ExportParams, load_params
from stages.precision import apply_precision
from stages.runtime import ONNX_FILE, SIDECAR_FILE

log = logging.getLogger(__name__)

OUTPUT_NAME = "logits"
SINGLE_FILE_LIMIT = 1_800_000_000  # bytes; protobuf cannot hold more than 2 GB
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu")
TORCH_DTYPES = {"int64": torch.int64, "int32": torch.int32}


def dummy_inputs(model: CustomModel, params: ExportParams) -> tuple[torch.Tensor, ...]:
    """Random inputs of the export dummy's shape, in the graph's input order and dtype."""
    generator = torch.Generator().manual_seed(0)
    shape = (params.dummy_batch, params.dummy_length)
    dtype = TORCH_DTYPES[params.input_dtype]
    tensors = {
        "input_ids": torch.randint(0, model.config.vocab_size, shape, generator=generator, dtype=dtype),
        "attention_mask": torch.ones(shape, dtype=dtype),
        "token_type_ids": torch.zeros(shape, dtype=dtype),
    }
    return tuple(tensors[name] for name in model.input_names)


def export_graph(model: CustomModel, params: ExportParams, path: Path) -> None:
    """Run the chosen exporter; the graph's inputs are exactly `model.input_names`."""
    wrapper = GraphInputs(model).eval()
    inputs = dummy_inputs(model, params)
    names = list(model.input_names)
    large = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values()) > SINGLE_FILE_LIMIT
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        if params.exporter == "dynamo":
            batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
            program = torch.onnx.export(
                wrapper,
                inputs,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_shapes=tuple({0: batch, 1: sequence} for _ in names),
                opset_version=params.opset,
                dynamo=True,
                verbose=False,
            )
            program.save(str(path), external_data=large)
        else:
            axes = {name: {0: "batch", 1: "sequence"} for name in [*names, OUTPUT_NAME]}
            torch.onnx.export(
                wrapper,
                inputs,
                str(path),
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=params.opset,
                do_constant_folding=True,
                dynamo=False,
            )


def graph_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset a model was written with."""
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def describe_io(values: Any) -> list[dict[str, Any]]:
    """Names, dtypes and shapes (symbolic dims by name) of graph inputs or outputs."""
    return [
        {
            "name": value.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name,
            "shape": [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim],
        }
        for value in values
    ]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made and will serve the model."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def build_metadata(graph: onnx.ModelProto, spec: HeadSpec, params: ExportParams, model_type: str) -> dict[str, Any]:
    """Everything a server needs to feed the model and read its output."""
    return {
        "exporter": params.exporter,
        "opset": graph_opset(graph),
        "precision": params.precision,
        "model_type": model_type,
        "inputs": describe_io(graph.graph.input),
        "outputs": describe_io(graph.graph.output),
        "labels": list(spec.labels),
        "max_length": spec.max_length,
        "truncation_side": spec.truncation_side,
        "source_checkpoint": spec.source_checkpoint,
        "source_sha256": spec.source_sha256,
        "versions": library_versions(),
    }


def finish_graph(
    path: Path, spec: HeadSpec, params: ExportParams, model_type: str, conversion: dict[str, int]
) -> dict[str, Any]:
    """Check the exported graph against what was asked, stamp its metadata, and return it."""
    graph = onnx.load(str(path), load_external_data=False)
    opset = graph_opset(graph)
    if opset != params.opset:
        raise UserError(
            f"export.opset = {params.opset} but the {params.exporter} exporter wrote opset {opset}; "
            "use export.opset >= 17 with the dynamo exporter, or export.exporter: torchscript for opsets 13-16"
        )
    actual_inputs = [value.name for value in graph.graph.input]
    if actual_inputs != list(spec.input_names):
        log.warning(
            "the exporter kept inputs %s of %s: the others are unused by the model",
            actual_inputs,
            list(spec.input_names),
        )
    metadata = {**build_metadata(graph, spec, params, model_type), "precision_conversion": conversion}
    onnx.helper.set_model_props(
        graph, {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    )
    onnx.save(graph, str(path))
    onnx.checker.check_model(str(path))
    return metadata


def main() -> None:
    params = load_params()
    model_dir, target = Path(params.model.output), Path(params.export.output)
    if not model_dir.is_dir():
        raise UserError(
            f"normalised model directory {model_dir} not found (model.output); run stage load_checkpoint first"
        )
    model, spec = load_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    with atomic_directory(target) as staging:
        export_graph(model, params.export, staging / ONNX_FILE)
        conversion = apply_precision(staging / ONNX_FILE, params.export.precision)
        metadata = finish_graph(staging / ONNX_FILE, spec, params.export, model.config.model_type, conversion)
        tokenizer.save_pretrained(staging)
        (staging / SIDECAR_FILE).write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    inputs = ", ".join(f"{entry['name']}:{entry['dtype']}" for entry in metadata["inputs"])
    log.info(
        "wrote %s/%s: %s exporter, opset %d, inputs %s",
        target,
        ONNX_FILE,
        params.export.exporter,
        metadata["opset"],
        inputs,
    )


if __name__ == "__main__":
    run_stage(main)
