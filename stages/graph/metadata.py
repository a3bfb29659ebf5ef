"""What an exported model says about itself: checked against what was asked, stored in the ONNX file and a sidecar."""

from __future__ import annotations

import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.errors import UserError
from stages.core.params import ExportParams

if TYPE_CHECKING:  # onnx is imported where a graph is read or written: scoring reads only the sidecar
    import onnx

log = logging.getLogger(__name__)

STACK_TRACE = "pkg.torch.onnx.stack_trace"  # node metadata the dynamo exporter writes
ONNX_FILE = "model.onnx"  # the files of an exported model directory
WEIGHTS_DATA = "model.onnx.data"  # the weights beside the graph: onnxruntime maps them instead of copying them
SIDECAR_FILE = "model.json"
# A CRF head's scores (`transitions`, `start_transitions`, `end_transitions`) beside the graph, which infer decodes with.
CRF_FILE = "crf.json"
VITERBI = "viterbi"  # `decoding` in model.json where the labels are a CRF's; absent: each token's best score
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu")


def graph_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset a model was written with."""
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def describe_io(values: Any) -> list[dict[str, Any]]:
    """Names, dtypes and shapes (symbolic dims by name) of graph inputs or outputs."""
    import onnx

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


def stamp_metadata(path: Path, params: ExportParams, expected_inputs: tuple[str, ...], facts: dict[str, Any]) -> dict:
    """Check the exported graph against what was asked, store its metadata in it, and return the metadata.

    `facts` are what the graph cannot tell (labels, max_length, source checkpoint, conversion counts, and for an
    adopted `export.onnx_file` where it came from). An adopted file keeps the opset it was written with. The graph
    is saved with its weights beside it (`save_with_weights_apart`).
    """
    import onnx

    graph = onnx.load(str(path))
    opset = graph_opset(graph)
    if params.onnx_file is None and opset != params.opset:
        raise UserError(
            f"export.opset = {params.opset} but the {params.exporter} exporter wrote opset {opset}; "
            "use export.opset >= 17 with the dynamo exporter, or export.exporter: torchscript for opsets 13-16"
        )
    actual_inputs = [value.name for value in graph.graph.input]
    if actual_inputs != list(expected_inputs):
        log.warning(
            "the exporter kept inputs %s of %s: the others are unused by the model",
            actual_inputs,
            list(expected_inputs),
        )
    if params.onnx_file is None:  # an adopted file is served as it was written
        drop_stack_traces(graph.graph)
    metadata = {
        "exporter": params.exporter,
        "opset": opset,
        "precision": params.precision,
        **facts,
        "inputs": describe_io(graph.graph.input),
        "outputs": describe_io(graph.graph.output),
        "versions": library_versions(),
    }
    onnx.helper.set_model_props(
        graph, {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    )
    save_with_weights_apart(graph, path)
    onnx.checker.check_model(str(path))
    return metadata


def drop_stack_traces(graph: onnx.GraphProto) -> None:
    """Remove the dynamo exporter's per-node Python stack traces (`STACK_TRACE`): they hold the exporting checkout's
    paths and line numbers, so the same model exported from two clones, or after an edit that moves a line, would be
    different bytes, and a new model for DVC and the score store."""
    for node in graph.node:
        kept = [entry for entry in node.metadata_props if entry.key != STACK_TRACE]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs]:
                drop_stack_traces(subgraph)


def save_with_weights_apart(model: onnx.ModelProto, path: Path) -> None:
    """Save `model` at `path`, its weights in `WEIGHTS_DATA` beside it (written anew). onnxruntime maps that file
    instead of reading the weights into its own memory, so a session holds the pages it touches: a 250k-token
    embedding costs the rows the texts use, and loading does not hold the weights twice."""
    import onnx

    (path.parent / WEIGHTS_DATA).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=WEIGHTS_DATA,
        size_threshold=1024,
    )  # fmt: skip


def read_sidecar(onnx_dir: Path) -> dict[str, Any]:
    """The exported model's metadata, or a `UserError` saying to run the export stage."""
    sidecar = onnx_dir / SIDECAR_FILE
    if not sidecar.is_file():
        raise UserError(f"{sidecar} not found (export.output); run the export stage first")
    return json.loads(sidecar.read_text(encoding="utf-8"))
