"""The model under test, and the ONNX variants of it that the benchmarks serve."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from stages.core.params import ExportParams, Params
from stages.graph.exporter import export_graph
from stages.graph.metadata import ONNX_FILE
from stages.graph.precision import apply_precision
from stages.model.backbone import load_backbone, mdeberta_v3_config
from stages.model.directory import HeadSpec, load_model_dir, write_model_dir
from stages.model.token_model import CustomModel
from stages.scoring.tokens import TextTokenizer

log = logging.getLogger(__name__)

SIZES = ("demo", "base")
BASE_NUM_LABELS, BASE_DROPOUT = 4, 0.2


def base_model() -> CustomModel:
    """A seeded random-weight model of mdeberta-v3-base's exact shape."""
    torch.manual_seed(0)
    return CustomModel(mdeberta_v3_config(), BASE_NUM_LABELS, BASE_DROPOUT).eval()


def model_under_test(size: str, params: Params) -> tuple[CustomModel, TextTokenizer]:
    """`demo`: the pipeline's normalised model (`model.output`) and its tokenizer; `base`: the random
    mdeberta-v3-base-shaped model, fed by `model.backbone`'s tokenizer."""
    if size == "demo":
        model, _ = load_model_dir(Path(params.model.output))
        return model, TextTokenizer.load(Path(params.model.output))
    tokenizer = load_backbone(params.model)[1]
    return base_model(), TextTokenizer(tokenizer.backend_tokenizer, tokenizer.pad_token_id)


def normalised_model(size: str, params: Params, target: Path) -> tuple[Path, CustomModel]:
    """A normalised model directory for the model under test: `model.output` itself, or the base model written
    to `target` with `model.backbone`'s tokenizer (as `load_checkpoint` writes one)."""
    if size == "demo":
        return Path(params.model.output), load_model_dir(Path(params.model.output))[0]
    model = base_model()
    labels = tuple(f"LABEL_{index}" for index in range(BASE_NUM_LABELS))
    spec = HeadSpec(
        num_labels=BASE_NUM_LABELS,
        labels=labels,
        classifier_dropout=BASE_DROPOUT,
        input_names=model.input_names,
        max_length=params.model.max_length,
        truncation_side=params.model.truncation_side,
        source_checkpoint="random weights, mdeberta-v3-base shape, seed 0",
        source_sha256="",
    )
    write_model_dir(model, load_backbone(params.model)[1], spec, target)
    return target, model


def export_fp32(model: CustomModel, directory: Path) -> Path:
    """The fp32 ONNX model (dynamo exporter, opset 18, int64 inputs) in `directory`."""
    params = ExportParams(
        exporter="dynamo",
        opset=18,
        input_dtype="int64",
        precision="fp32",
        int8_target="auto",
        int8_max_float_share=0.0,  # unused: the fp32 model
        dummy_batch=2,
        dummy_length=6,
        output=str(directory),
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ONNX_FILE
    started = time.perf_counter()
    export_graph(model, params, path)
    log.info("exported the fp32 ONNX model in %.1f s", time.perf_counter() - started)
    return path


def converted_copy(source: Path, directory: Path, precision: str, int8_target: str = "auto") -> Path:
    """A copy of the fp32 model (with any external data) converted to `precision` (int8 for `int8_target`)."""
    directory.mkdir(parents=True, exist_ok=True)
    for item in source.parent.iterdir():
        if item.is_file() and item.name.startswith(source.name):
            shutil.copy2(item, directory / item.name)
    started = time.perf_counter()
    conversion = apply_precision(directory / source.name, precision, int8_target)
    log.info("made the %s ONNX model in %.1f s: %s", precision, time.perf_counter() - started, conversion)
    return directory / source.name
