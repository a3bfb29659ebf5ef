"""Outlier channels put into a model without changing what it computes, the way real pretrained encoders have
them: a few hidden dimensions many times larger than the rest at the inputs of weight MatMuls, which costs
per-tensor int8 activations their resolution everywhere else.

Each change scales a few channels of a norm's output by `factor` and divides the matching input columns of
the only Linear that reads them, so fp32 is unchanged (to float rounding): the last norm before the head
(its output feeds the head alone, in every family), and in pre-LN blocks (ModernBERT) every norm that feeds
a Linear alone. (Post-LN norms also feed a residual sum, so scaling them would change the function.)
"""

from __future__ import annotations

import torch
from torch import nn

from stages.model.token_model import CustomModel

PRE_NORMS = {"attn_norm": "attn.Wqkv", "mlp_norm": "mlp.Wi"}  # ModernBERT: norm -> the Linear it alone feeds


def outlier_channels(hidden_size: int) -> list[int]:
    """Two channels of the hidden size, one in each half."""
    return [hidden_size // 10, hidden_size // 2 + hidden_size // 10]


def scale_norm(norm: nn.LayerNorm, reader: nn.Linear, channels: list[int], factor: float) -> None:
    """The norm's output channels times `factor`, its one reader's input columns divided by it."""
    norm.weight[channels] *= factor
    if norm.bias is not None:
        norm.bias[channels] *= factor
    reader.weight[:, channels] /= factor


def last_norm(model: CustomModel) -> nn.LayerNorm:
    """The LayerNorm whose output is the backbone's last hidden state (what the head reads)."""
    outputs: dict[str, torch.Tensor] = {}
    norms = {name: module for name, module in model.model.named_modules() if isinstance(module, nn.LayerNorm)}
    hooks = [
        module.register_forward_hook(lambda _module, _inputs, output, name=name: outputs.__setitem__(name, output))
        for name, module in norms.items()
    ]
    ids = torch.arange(1, 7).reshape(2, 3)
    with torch.inference_mode():
        hidden = model.model(input_ids=ids, attention_mask=torch.ones_like(ids))[0]
    for hook in hooks:
        hook.remove()
    (name,) = [name for name, output in outputs.items() if output.shape == hidden.shape and torch.equal(output, hidden)]
    return norms[name]


def norm_readers(model: CustomModel) -> list[tuple[nn.LayerNorm, str]]:
    """Each norm whose output one Linear alone reads, with that Linear's name: the head's, and pre-LN blocks'."""
    modules = dict(model.named_modules())
    pairs = [(last_norm(model), "fc")]
    for name, module in modules.items():
        for norm_suffix, reader_suffix in PRE_NORMS.items():
            if name.endswith(norm_suffix) and isinstance(module, nn.LayerNorm):
                pairs.append((module, name.removesuffix(norm_suffix) + reader_suffix))
    return pairs


@torch.no_grad()
def add_outliers(model: CustomModel, factor: float) -> list[str]:
    """Give `model` outlier channels `factor` times their size, keeping its function; returns the Linears that
    read them."""
    channels = outlier_channels(model.config.hidden_size)
    modules = dict(model.named_modules())
    pairs = norm_readers(model)
    for norm, reader in pairs:
        scale_norm(norm, modules[reader], channels, factor)
    return [reader for _, reader in pairs]
