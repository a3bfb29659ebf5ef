"""The token-classification model of the seed notes: an encoder backbone, dropout, a per-token Linear head.

Attribute names (`model`, `fc_dropout`, `fc`) match the seed's `CustomModel`, so its `state_dict`
checkpoints load without renaming. The backbone is built from its *config*: the checkpoint holds
every weight, so no pretrained download is needed.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig


def backbone_input_names(backbone: nn.Module, config: PretrainedConfig) -> tuple[str, ...]:
    """The inputs the backbone really uses, in graph order.

    `token_type_ids` is passed only when the backbone's forward accepts it and the config has more
    than one token type: DeBERTa-v2 (`type_vocab_size` 0) and RoBERTa (1) ignore it, DistilBERT does
    not take it at all, BERT (2) uses it.
    """
    accepted = inspect.signature(backbone.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in accepted and getattr(config, "type_vocab_size", 0) > 1:
        names.append("token_type_ids")
    return tuple(names)


def backbone_inputs(
    input_names: tuple[str, ...],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """The keyword arguments of the backbone's forward: `token_type_ids` only where it uses them."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in input_names and token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    return inputs


class CustomModel(nn.Module):
    """Backbone + dropout + Linear applied to every token's last hidden state."""

    def __init__(self, config: PretrainedConfig, num_labels: int, classifier_dropout: float) -> None:
        super().__init__()
        self.config = config
        self.model = AutoModel.from_config(config)
        self.fc_dropout = nn.Dropout(classifier_dropout)
        self.fc = nn.Linear(config.hidden_size, num_labels)
        self.fc.weight.data.normal_(mean=0.0, std=getattr(config, "initializer_range", 0.02))
        self.fc.bias.data.zero_()
        self.num_labels = num_labels
        self.input_names = backbone_input_names(self.model, config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        last_hidden_state = self.model(**backbone_inputs(self.input_names, input_ids, attention_mask, token_type_ids))[
            0
        ]
        return self.fc(self.fc_dropout(last_hidden_state))


class GraphInputs(nn.Module):
    """Export front of a token model (`CustomModel`, or the encoder with your head): integer inputs of any width, cast
    to int64 inside the graph.

    The cast lets the exported inputs be int32 (as in the seed) or int64.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(
            input_ids.long(),
            attention_mask.long(),
            None if token_type_ids is None else token_type_ids.long(),
        )


def torch_inputs(model: nn.Module, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The model's inputs from a padded batch of arrays, as int64 tensors."""
    return {name: torch.from_numpy(np.asarray(arrays[name], dtype=np.int64)) for name in model.input_names}


def torch_logits(model: nn.Module, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Run one padded batch in torch eager; returns float32 logits [batch, sequence, labels]."""
    with torch.inference_mode():
        return model(**torch_inputs(model, arrays)).float().numpy()
