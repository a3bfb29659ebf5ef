"""A Linear head whose scores are a CRF's emissions: `model.head: linear_crf:LinearCrfHead`.

The ONNX model computes the emissions; `infer` decodes them with the CRF's scores (Viterbi, over each window's tokens
as `crf.decode(emissions, attention_mask)` does). The checkpoint holds `fc.*` and `crf.transitions`,
`crf.start_transitions`, `crf.end_transitions` beside the encoder, as a model with pytorch-crf's `CRF` saves them;
serving needs only these scores, not pytorch-crf (docs/heads.md).
"""

from __future__ import annotations

import torch
from torch import nn


class CrfScores(nn.Module):
    """A linear-chain CRF's scores, named as pytorch-crf's `CRF` names them: `transitions[i, j]` from label i to j."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))


class LinearCrfHead(nn.Module):
    """Dropout, then Linear(hidden -> labels) on the last hidden state: the emissions of the CRF `crf`."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, num_labels)
        self.crf = CrfScores(num_labels)

    def forward(self, hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(hidden_states[-1]))
