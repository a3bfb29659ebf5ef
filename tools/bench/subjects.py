"""The models the benchmark tools measure: the benchmark stage's model under test, written as a normalised model
directory, with labels planted or outlier channels added where a tool asks for them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import AutoTokenizer

from stages.bench.subject import BASE_DROPOUT, BASE_NUM_LABELS, base_model
from stages.core.params import Params
from stages.model.backbone import load_backbone
from stages.model.directory import HeadSpec, load_model_dir, write_model_dir
from stages.model.token_model import CustomModel
from tools.outliers import add_outliers

PLANTED_STRENGTH, PLANTED_HEAD_SCALE = 1.0, 0.5  # a label direction of norm 1 in embeddings of norm ~0.55


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
