"""Backbones: the config and tokenizer a model is built from, read offline, and the reference shapes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, DebertaV2Config, PretrainedConfig, PreTrainedTokenizerBase

from stages.core.errors import UserError
from stages.core.params import ModelParams

log = logging.getLogger(__name__)

# Backbones whose position ids start after the padding index.
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")
TOKENIZER_CONFIG = "tokenizer_config.json"


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


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Save the tokenizer so that older transformers releases load it too (Optimum pins transformers < 4.58).

    transformers 5 names its generic fast tokenizer `TokenizersBackend` in tokenizer_config.json, a name
    older releases do not know; `PreTrainedTokenizerFast` is the same class to both.
    """
    tokenizer.save_pretrained(directory)
    config_file = directory / TOKENIZER_CONFIG
    settings = json.loads(config_file.read_text(encoding="utf-8"))
    if settings.get("tokenizer_class") == "TokenizersBackend":
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
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
