"""The torch model to an ONNX graph with dynamic batch and sequence axes, by either exporter."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from stages.core.errors import UserError, raised_in_project
from stages.core.params import ExportParams
from stages.graph.fusible import spell_for_fusion
from stages.graph.rewrites import lean_attention
from stages.model.custom_head import TokenModel
from stages.model.token_model import GraphInputs

OUTPUT_NAME = "logits"
SINGLE_FILE_LIMIT = 1_800_000_000  # bytes; protobuf cannot hold more than 2 GB
TORCH_DTYPES = {"int64": torch.int64, "int32": torch.int32}
OP_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"  # the dynamo exporter's table of ONNX functions
TORCHVISION_ABSENT = "torchvision is not installed"


def dummy_inputs(model: TokenModel, params: ExportParams) -> tuple[torch.Tensor, ...]:
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


def export_graph(model: TokenModel, params: ExportParams, path: Path) -> list[str]:
    """Run the chosen exporter, then respell the graph where onnxruntime fuses another spelling
    (`stages.graph.fusible`); returns those rewrites' names. A backbone the exporter cannot export is a
    `UserError` that names the other exporter; an error raised in this project's own code (a rewrite, the
    model wrapper) is a bug and keeps its traceback."""
    try:
        run_exporter(model, params, path)
    except Exception as error:  # exporters raise many types for a model they cannot export; ours are bugs
        if raised_in_project(error):
            raise
        other = "torchscript" if params.exporter == "dynamo" else "dynamo"
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(
            f"the {params.exporter} exporter cannot export this {model.config.model_type} model "
            f"({type(error).__name__}: {first_line[:300]}); use export.exporter: {other} instead"
        ) from error
    return spell_for_fusion(path)


@contextmanager
def without_torchvision_warnings() -> Iterator[None]:
    """The dynamo exporter's function table warns, on every export, that it skips torchvision's ops (nms, roi_align,
    ...) because torchvision is not installed: no token classifier calls them, so those lines say nothing."""
    registry = logging.getLogger(OP_REGISTRY_LOGGER)

    def relevant(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TORCHVISION_ABSENT)

    registry.addFilter(relevant)
    try:
        yield
    finally:
        registry.removeFilter(relevant)


def run_exporter(model: TokenModel, params: ExportParams, path: Path) -> None:
    """The chosen exporter, with dynamic batch and sequence axes; the graph's inputs are `model.input_names`."""
    wrapper = GraphInputs(model).eval()
    inputs = dummy_inputs(model, params)
    names = list(model.input_names)
    large = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values()) > SINGLE_FILE_LIMIT
    with (
        torch.inference_mode(False),
        torch.no_grad(),
        warnings.catch_warnings(),
        lean_attention(),
        without_torchvision_warnings(),
    ):
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
