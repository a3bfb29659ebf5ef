"""A head on the encoder's last four hidden states, concatenated: `model.head: concat_last_four:ConcatLastFourHead`.

The checkpoint holds its Linear as `fc` (`fc.weight` [labels, 4 x hidden]) beside the encoder, as a `CustomModel`
whose `fc` reads `torch.cat([hidden_states[-1], hidden_states[-2], hidden_states[-3], hidden_states[-4]], -1)` saves
it. Copy this file beside your own heads and rename what differs (docs/heads.md).
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = 4


class ConcatLastFourHead(nn.Module):
    """Dropout, then Linear(4 x hidden -> labels) on each token's last four hidden states, the last layer's first."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(LAYERS * hidden_size, num_labels)

    def forward(self, hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor) -> torch.Tensor:
        if len(hidden_states) < LAYERS:
            raise ValueError(f"the encoder gives {len(hidden_states)} hidden states; this head reads the last {LAYERS}")
        features = torch.cat([hidden_states[-index] for index in range(1, LAYERS + 1)], dim=-1)
        return self.fc(self.dropout(features))
