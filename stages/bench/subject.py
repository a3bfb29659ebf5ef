"""The model under test of the `benchmark` stage (`benchmark.size`), and the ONNX models of it that it serves."""

from __future__ import annotations

import dataclasses
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
from stages.model.custom_head import TokenModel
from stages.model.directory import load_model_dir
from stages.model.token_model import CustomModel
from stages.scoring.tokens import TextTokenizer

log = logging.getLogger(__name__)

SIZES = ("demo", "base")
BASE_NUM_LABELS, BASE_DROPOUT = 4, 0.2


def base_model(seed: int) -> CustomModel:
    """A random-weight model of mdeberta-v3-base's exact shape, from `seed` (`benchmark.seed`)."""
    torch.manual_seed(seed)
    return CustomModel(mdeberta_v3_config(), BASE_NUM_LABELS, BASE_DROPOUT).eval()


def model_under_test(size: str, params: Params) -> tuple[TokenModel, TextTokenizer]:
    """`demo`: the pipeline's normalised model (`model.output`) and its tokenizer; `base`: the random
    mdeberta-v3-base-shaped model, fed by `model.backbone`'s tokenizer."""
    if size == "demo":
        model, _ = load_model_dir(Path(params.model.output))
        return model, TextTokenizer.load(Path(params.model.output))
    tokenizer = load_backbone(params.model)[1]
    return base_model(params.benchmark.seed), TextTokenizer(tokenizer.backend_tokenizer, tokenizer.pad_token_id)


def export_fp32(model: TokenModel, directory: Path, export: ExportParams) -> Path:
    """The model exported to fp32 ONNX in `directory`, as the `export` params export it (an `onnx_file` aside)."""
    params = dataclasses.replace(export, precision="fp32", onnx_file=None, output=str(directory))
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
