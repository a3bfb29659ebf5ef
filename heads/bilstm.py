"""A bidirectional LSTM on the encoder's last hidden state: `model.head: bilstm:BiLstmHead`.

Each row's LSTM runs over its own tokens only (packed by the attention mask), so a row's scores do not depend on the
padding of the batch it runs in. The checkpoint holds `lstm.*` and `fc.*` beside the encoder. The dynamo exporter
cannot export packed sequences: export it with `export.exporter: torchscript` (docs/heads.md).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BiLstmHead(nn.Module):
    """A BiLSTM of `lstm_size` units each way, dropout, then Linear(2 x lstm_size -> labels)."""

    def __init__(self, hidden_size: int, lstm_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(hidden_size, lstm_size, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * lstm_size, num_labels)

    def forward(self, hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor) -> torch.Tensor:
        last = hidden_states[-1]
        lengths = attention_mask.sum(dim=1).cpu()
        packed = pack_padded_sequence(last, lengths, batch_first=True, enforce_sorted=False)
        output, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=last.shape[1])
        return self.fc(self.dropout(output))
