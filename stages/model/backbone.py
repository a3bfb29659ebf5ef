"""Backbones: the config and tokenizer a model is built from, read offline, and the reference shapes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoConfig, DebertaV2Config, PretrainedConfig, PreTrainedTokenizerBase

from stages.core.errors import UserError
from stages.core.params import ModelParams
from stages.model.tokenizer_layout import load_tokenizer

log = logging.getLogger(__name__)

# Backbones whose position ids start after the padding index.
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")
TOKENIZER_CONFIG = "tokenizer_config.json"


def resolve_backbone(source: str) -> Path:
    """The directory `model.backbone` names: a local directory, or a Hugging Face id's snapshot in the local cache
    (`HF_HOME` / `HF_HUB_CACHE`; nothing is downloaded)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot load backbone {source!r} (model.backbone): {str(error).splitlines()[0]} "
            "It must be a local directory with config.json and tokenizer files, or a Hugging Face id "
            "already in the local cache (download it once with `hf download <id>` on a connected machine; "
            "HF_HOME or HF_HUB_CACHE say where the cache is)."
        ) from None


def snapshot_revision(directory: Path) -> str | None:
    """The revision of a Hugging Face cache snapshot (`.../snapshots/<revision>`, what a hub id resolves to), or None
    for another directory."""
    resolved = directory.resolve()
    return resolved.name if resolved.parent.name == "snapshots" else None


def load_backbone(params: ModelParams) -> tuple[PretrainedConfig, PreTrainedTokenizerBase]:
    """The backbone's config and tokenizer, from a local directory or the local Hugging Face cache."""
    source = params.backbone
    if params.trust_remote_code:
        log.warning("model.trust_remote_code is true: code shipped with %s will run", source)
    directory = resolve_backbone(source)
    try:
        config = AutoConfig.from_pretrained(
            directory, local_files_only=True, trust_remote_code=params.trust_remote_code
        )
        tokenizer = load_tokenizer(
            directory,
            source,
            trust_remote_code=params.trust_remote_code,
            model_max_length=params.max_length,
            truncation_side=params.truncation_side,
        )
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot load backbone {source!r} (model.backbone) from {directory}: {str(error).splitlines()[0]} "
            "It needs config.json and tokenizer files (tokenizer.json, a SentencePiece model, or vocabulary files)."
        ) from None
    limit = position_limit(config)
    if limit is not None and params.max_length > limit:
        raise UserError(
            f"model.max_length = {params.max_length} exceeds what {source!r} can embed ({limit} positions); "
            f"set model.max_length <= {limit}"
        )
    return config, tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Save the tokenizer so that every transformers release loads `tokenizer.json` as it is.

    The class is written as `PreTrainedTokenizerFast`, the generic fast tokenizer of every release (transformers
    5 calls it `TokenizersBackend`, a name older releases do not know): a family's own class may rebuild the
    pipeline on load (transformers 5's DebertaV2Tokenizer swaps the saved normaliser for NFC). The family's model
    inputs are kept, so pipelines feed only what the model takes, and extra special tokens are written as
    `additional_special_tokens`, which transformers 4 reads too.
    """
    tokenizer.save_pretrained(directory)
    config_file = directory / TOKENIZER_CONFIG
    settings = json.loads(config_file.read_text(encoding="utf-8"))
    settings.pop("local_files_only", None)  # a loading option transformers saves with the settings
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = settings.pop("extra_special_tokens", None)  # transformers 5 writes a list, which 4.x cannot read
    if isinstance(extra, list) and (named := [token for token in extra if token not in settings.values()]):
        settings["additional_special_tokens"] = named  # the name both releases read
    settings["model_input_names"] = list(tokenizer.model_input_names)
    config_file.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def position_limit(config: PretrainedConfig) -> int | None:
    """The longest sequence a backbone with absolute position embeddings can take; None if unbounded."""
    if not getattr(config, "position_biased_input", True) or not hasattr(config, "max_position_embeddings"):
        return None
    offset = config.pad_token_id + 1 if config.model_type in ROBERTA_LIKE else 0
    return config.max_position_embeddings - offset


MDEBERTA_V3_BASE = {  # microsoft/mdeberta-v3-base's config.json, architecture keys
    "vocab_size": 251000,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 0,
    "relative_attention": True,
    "position_buckets": 256,
    "max_relative_positions": -1,
    "pos_att_type": ["p2c", "c2p"],
    "norm_rel_ebd": "layer_norm",
    "share_att_key": True,
    "position_biased_input": False,
    "layer_norm_eps": 1e-7,
    "pad_token_id": 0,
}


def mdeberta_v3_config(**overrides: object) -> DebertaV2Config:
    """mdeberta-v3-base's architecture (relative attention, p2c/c2p, no token types), sizes overridable."""
    return DebertaV2Config(**{**MDEBERTA_V3_BASE, **overrides})
