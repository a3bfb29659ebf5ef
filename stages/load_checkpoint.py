"""Stage `load_checkpoint`: any checkpoint into the model class, keys checked, written normalised.

The output directory is self-contained: safetensors weights, the backbone config, the tokenizer
(with `max_length` and truncation side set), label names and the head spec. Nothing downstream
unpickles anything.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from stages.atomic import atomic_directory
from stages.checkpoint import compare_keys, describe_mismatch, read_checkpoint, sha256_of, strip_wrapper_prefixes
from stages.errors import UserError, run_stage
from stages.model import HEAD_FILE, WEIGHTS_FILE, CustomModel, HeadSpec
from stages.params import ModelParams, load_params

log = logging.getLogger(__name__)

# Buffers that older transformers releases saved and current ones rebuild: safe to drop.
REBUILT_BUFFER_SUFFIXES = ("embeddings.position_ids",)
# Backbones whose position ids start after the padding index.
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")


def load_backbone(params: ModelParams) -> tuple[PretrainedConfig, PreTrainedTokenizerBase]:
    """The backbone's config and tokenizer, from a local directory or the local Hugging Face cache."""
    source = params.backbone
    if params.trust_remote_code:
        log.warning("model.trust_remote_code is true: code shipped with %s will run", source)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=params.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(
            source,
            local_files_only=True,
            trust_remote_code=params.trust_remote_code,
            model_max_length=params.max_length,
            truncation_side=params.truncation_side,
        )
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot load backbone {source!r} (model.backbone): {str(error).splitlines()[0]} "
            "It must be a local directory with config.json and tokenizer files, or a Hugging Face id "
            "already in the local cache (download it once with `hf download <id>` on a connected machine)."
        ) from None
    limit = position_limit(config)
    if limit is not None and params.max_length > limit:
        raise UserError(
            f"model.max_length = {params.max_length} exceeds what {source!r} can embed ({limit} positions); "
            f"set model.max_length <= {limit}"
        )
    if not tokenizer.is_fast:
        raise UserError(f"backbone {source!r} has no fast tokenizer (tokenizer.json); character offsets need one")
    return config, tokenizer


def position_limit(config: PretrainedConfig) -> int | None:
    """The longest sequence a backbone with absolute position embeddings can take; None if unbounded."""
    if not getattr(config, "position_biased_input", True) or not hasattr(config, "max_position_embeddings"):
        return None
    offset = config.pad_token_id + 1 if config.model_type in ROBERTA_LIKE else 0
    return config.max_position_embeddings - offset


def build_model(params: ModelParams, config: PretrainedConfig, checkpoint: Path) -> CustomModel:
    """The model class with the checkpoint's weights, after normalising keys and a strict check."""
    model = CustomModel(config, params.num_labels, params.classifier_dropout)
    model_state = model.state_dict()
    state = strip_wrapper_prefixes(read_checkpoint(checkpoint), set(model_state))
    for key in [key for key in state if key.endswith(REBUILT_BUFFER_SUFFIXES) and key not in model_state]:
        log.info("dropping %s: this transformers release rebuilds it", key)
        del state[key]
    report = compare_keys(state, model_state)
    if not report.ok:
        raise UserError(describe_mismatch(report, checkpoint))
    model.load_state_dict(state, strict=True)
    return model.eval()


def write_model_dir(model: CustomModel, tokenizer: PreTrainedTokenizerBase, spec: HeadSpec, target: Path) -> None:
    """Write the normalised model directory atomically."""
    with atomic_directory(target) as staging:
        weights = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
        save_file(weights, staging / WEIGHTS_FILE, metadata={"format": "pt"})
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / HEAD_FILE).write_text(spec.to_json(), encoding="utf-8")


def main() -> None:
    params = load_params().model
    checkpoint = Path(params.checkpoint)
    config, tokenizer = load_backbone(params)
    torch.manual_seed(0)
    model = build_model(params, config, checkpoint)
    spec = HeadSpec(
        num_labels=params.num_labels,
        labels=params.label_names,
        classifier_dropout=params.classifier_dropout,
        input_names=model.input_names,
        max_length=params.max_length,
        truncation_side=params.truncation_side,
        source_checkpoint=str(checkpoint),
        source_sha256=sha256_of(checkpoint),
    )
    write_model_dir(model, tokenizer, spec, Path(params.output))
    parameters = sum(tensor.numel() for tensor in model.parameters())
    log.info(
        "wrote %s: %s, %.1fM parameters, inputs %s",
        params.output,
        config.model_type,
        parameters / 1e6,
        spec.input_names,
    )


if __name__ == "__main__":
    run_stage(main)
