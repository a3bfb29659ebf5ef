"""The model under test, and the ONNX variants of it that the benchmarks serve."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from stages.bench.outliers import add_outliers
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
PLANTED_STRENGTH, PLANTED_HEAD_SCALE = 1.0, 0.5  # a label direction of norm 1 in embeddings of norm ~0.55


def benchmark_parser(description: str, rows: int) -> argparse.ArgumentParser:
    """A benchmark command's parser with the options they all take: the model under test and the rows."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--size", choices=SIZES, default="base", help="demo: the pipeline's model; base: mdeberta shape"
    )
    parser.add_argument("--dataset", default=None, help="a .parquet/.csv/.jsonl dataset (default: infer.input)")
    parser.add_argument("--rows", type=int, default=rows, help="the dataset's first rows")
    return parser


def base_model(seed: int) -> CustomModel:
    """A random-weight model of mdeberta-v3-base's exact shape, from `seed` (`benchmark.seed`)."""
    torch.manual_seed(seed)
    return CustomModel(mdeberta_v3_config(), BASE_NUM_LABELS, BASE_DROPOUT).eval()


def model_under_test(size: str, params: Params) -> tuple[CustomModel, TextTokenizer]:
    """`demo`: the pipeline's normalised model (`model.output`) and its tokenizer; `base`: the random
    mdeberta-v3-base-shaped model, fed by `model.backbone`'s tokenizer."""
    if size == "demo":
        model, _ = load_model_dir(Path(params.model.output))
        return model, TextTokenizer.load(Path(params.model.output))
    tokenizer = load_backbone(params.model)[1]
    return base_model(params.benchmark.seed), TextTokenizer(tokenizer.backend_tokenizer, tokenizer.pad_token_id)


def plant_labels(model: CustomModel, seed: int = 0) -> None:
    """Make a random-weight model decide every token's label by a wide margin, as a trained model does: each
    vocabulary id gets a label (seeded), its word embedding a strong component along that label's direction,
    and the head reads those directions. Random weights alone leave near-ties that any int8 flips, so no
    int8 mix could pass the gate on them."""
    generator = torch.Generator().manual_seed(seed)
    labels = model.fc.out_features
    directions = torch.linalg.qr(torch.randn(model.config.hidden_size, labels, generator=generator))[0].T
    table = model.model.get_input_embeddings().weight
    token_labels = torch.randint(0, labels, (table.shape[0],), generator=generator)
    with torch.no_grad():
        table += PLANTED_STRENGTH * directions[token_labels]
        model.fc.weight.copy_(PLANTED_HEAD_SCALE * directions)
        model.fc.bias.zero_()


def normalised_model(
    size: str, params: Params, target: Path, outliers: float = 0.0, planted: bool = False
) -> tuple[Path, CustomModel]:
    """A normalised model directory for the model under test: `model.output` itself, or written to `target` (as
    `load_checkpoint` writes one): the base model with `model.backbone`'s tokenizer, labels planted if asked,
    and either model given outlier channels `outliers` times their size (0: none)."""
    if size == "demo" and not outliers:
        return Path(params.model.output), load_model_dir(Path(params.model.output))[0]
    if size == "demo":
        model, spec = load_model_dir(Path(params.model.output))
        tokenizer = AutoTokenizer.from_pretrained(params.model.output, local_files_only=True)
    else:
        model, tokenizer = base_model(params.benchmark.seed), load_backbone(params.model)[1]
        spec = base_spec(params, model.input_names)
        if planted:
            plant_labels(model)
            spec = dataclasses.replace(spec, source_checkpoint=f"{spec.source_checkpoint}, labels planted")
    if outliers:
        add_outliers(model, outliers)
        spec = dataclasses.replace(spec, source_checkpoint=f"{spec.source_checkpoint}, outlier channels x{outliers:g}")
    write_model_dir(model, tokenizer, spec, target)
    return target, model


def base_spec(params: Params, input_names: tuple[str, ...]) -> HeadSpec:
    """The head spec of the base model: LABEL_i labels, `params`' framing."""
    return HeadSpec(
        num_labels=BASE_NUM_LABELS,
        labels=tuple(f"LABEL_{index}" for index in range(BASE_NUM_LABELS)),
        classifier_dropout=BASE_DROPOUT,
        input_names=input_names,
        max_length=params.model.max_length,
        truncation_side=params.model.truncation_side,
        source_checkpoint=f"random weights, mdeberta-v3-base shape, seed {params.benchmark.seed}",
        source_sha256="",
        init_seed=params.benchmark.seed,
    )


def export_fp32(model: CustomModel, directory: Path, export: ExportParams) -> Path:
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
