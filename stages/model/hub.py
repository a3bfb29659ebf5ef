"""The seed's model as a standard Hugging Face token-classification model, where the family's class is the same model.

For BERT, DeBERTa-v2, RoBERTa/XLM-R, DistilBERT and ELECTRA, `<Family>ForTokenClassification` is
the seed's `CustomModel` (encoder, dropout, Linear on every token) with other names: the encoder
under the class's `base_model_prefix` instead of `model`, the head `classifier` instead of `fc`. The
pooler some encoders carry is dropped: a token classifier never runs it. A family whose class adds
layers (ModernBERT's prediction head) is not the same model, and keeps the project's own names.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import AutoModelForTokenClassification, PretrainedConfig

from stages.model.state_mapping import ENCODER, HEAD, UNUSED_ENCODER_PARTS
from stages.model.token_model import CustomModel

HUB_HEAD = "classifier."


@dataclass(frozen=True)
class HubLayout:
    """Where the family's token-classification class keeps the encoder, and the class's name."""

    architecture: str
    prefix: str


def hub_config(config: PretrainedConfig, labels: tuple[str, ...], architecture: str | None) -> PretrainedConfig:
    """The backbone config with the labels (and, when there is one, the token-classification architecture)."""
    config = copy.deepcopy(config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: index for index, label in enumerate(labels)}
    config.architectures = [architecture] if architecture else None
    return config


def hub_layout(model: CustomModel) -> HubLayout | str:
    """The family's token-classification layout, or why its class is not the seed's model."""
    config = hub_config(model.config, tuple(f"LABEL_{index}" for index in range(model.fc.out_features)), None)
    try:
        with torch.device("meta"):  # shapes and names only: no memory, no initialisation
            reference = AutoModelForTokenClassification.from_config(config)
    except ValueError:
        return f"transformers has no token-classification class for model type {config.model_type!r}"
    layout = HubLayout(type(reference).__name__, reference.base_model_prefix)
    theirs = set(reference.state_dict())
    ours = {to_hub_key(key, layout.prefix) for key in model.state_dict()}
    if added := sorted(theirs - ours):
        return f"{layout.architecture} adds layers the seed's model does not have ({', '.join(added[:4])})"
    unused = sorted(key for key in ours - theirs if not is_unused(key, layout.prefix))
    if unused:
        return f"{layout.architecture} lacks weights the seed's model uses ({', '.join(unused[:4])})"
    return layout


def is_unused(hub_key: str, prefix: str) -> bool:
    return hub_key.startswith(tuple(f"{prefix}.{part}" for part in UNUSED_ENCODER_PARTS))


def to_hub_key(key: str, prefix: str) -> str:
    if key.startswith(HEAD):
        return HUB_HEAD + key[len(HEAD) :]
    return f"{prefix}.{key[len(ENCODER) :]}"


def to_hub_state(state: dict[str, torch.Tensor], layout: HubLayout) -> dict[str, torch.Tensor]:
    """The seed's weights under the token-classification class's names, without the unused pooler."""
    renamed = {to_hub_key(key, layout.prefix): tensor for key, tensor in state.items()}
    return {key: tensor for key, tensor in renamed.items() if not is_unused(key, layout.prefix)}


def from_hub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Token-classification weights back under the seed's names."""
    own = {}
    for key, tensor in state.items():
        if key.startswith(HUB_HEAD):
            own[HEAD + key[len(HUB_HEAD) :]] = tensor
        else:
            own[ENCODER + key[len(prefix) + 1 :]] = tensor
    return own


def unused_keys(model: CustomModel) -> tuple[str, ...]:
    """The seed model's weights a token classifier never runs (left as initialised when loading hub weights)."""
    return tuple(
        key for key in model.state_dict() if key.startswith(tuple(ENCODER + part for part in UNUSED_ENCODER_PARTS))
    )
