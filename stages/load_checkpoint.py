"""Stage `load_checkpoint`: any checkpoint into the model class, keys checked, written normalised."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from stages.core.declared import load_declared
from stages.core.runner import run_stage
from stages.model.backbone import load_backbone, resolve_backbone, snapshot_revision
from stages.model.checkpoint import check_directory_labels, sha256_of
from stages.model.crf import find_crf
from stages.model.custom_head import code_digest
from stages.model.directory import HeadSpec, build_model, write_model_dir
from stages.model.hub import HubLayout

log = logging.getLogger(__name__)

PARAMS = ("model",)  # what this stage reads, as its params in dvc.yaml


def main() -> None:
    params = load_declared(PARAMS).model
    checkpoint = Path(params.checkpoint)
    config, tokenizer = load_backbone(params)
    revision = snapshot_revision(resolve_backbone(params.backbone))
    if revision is not None:
        log.info("backbone %s: the Hugging Face cache's snapshot %s", params.backbone, revision)
    if checkpoint.is_dir():
        check_directory_labels(checkpoint, params.num_labels, params.labels)
    torch.manual_seed(params.seed)
    model = build_model(config, params, checkpoint)
    custom = params.head is not None
    if (crf := find_crf(model, params.num_labels)) is not None:
        log.info("the head's CRF is %s: the ONNX model gives the emissions, which infer decodes with its scores", crf)
    spec = HeadSpec(
        num_labels=params.num_labels,
        labels=params.label_names,
        classifier_dropout=params.classifier_dropout,
        input_names=model.input_names,
        max_length=params.max_length,
        truncation_side=params.truncation_side,
        source_checkpoint=str(checkpoint),
        source_sha256=sha256_of(checkpoint),
        init_seed=params.seed,
        backbone=params.backbone,
        backbone_revision=revision,
        head=params.head,
        head_args=params.head_args if custom else None,
        head_code=params.head_code if custom else None,
        head_code_sha256=code_digest(Path(params.head_code)) if custom else None,
    )
    layout = write_model_dir(model, tokenizer, spec, Path(params.output))
    parameters = sum(tensor.numel() for tensor in model.parameters())
    log.info(
        "wrote %s: %s, %.1fM parameters, inputs %s",
        params.output,
        config.model_type,
        parameters / 1e6,
        spec.input_names,
    )
    if isinstance(layout, HubLayout):
        log.info("%s loads as a %s with AutoModelForTokenClassification", params.output, layout.architecture)
    else:
        log.info("%s keeps the project's weight names, not a transformers class's: %s", params.output, layout)


if __name__ == "__main__":
    run_stage(main)
