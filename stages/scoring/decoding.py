"""A CRF head's labels: Viterbi decoding of the model's emission scores with the checkpoint's transitions, in numpy,
vectorised over the batch. It computes what `pytorch-crf`'s `CRF.decode(emissions, mask)` computes (the same float32
sums in the same order, the first best on ties), over each window's tokens, special tokens included, as the model
decodes `crf.decode(emissions, attention_mask)`. One implementation serves `infer` and the parity gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import UserError
from stages.graph.metadata import CRF_FILE, VITERBI
from stages.scoring.aggregation import SIMPLE

WORD_CHOICE = "first"  # the word-level strategy that reads labels; `average` and `max` read probabilities


@dataclass(frozen=True)
class Crf:
    """A linear-chain CRF's scores: `transitions[i, j]` from label i to label j, and the first and last label's (its
    fields are the parameters' names, as pytorch-crf's, and `crf.json`'s keys)."""

    transitions: np.ndarray  # float32 [labels, labels]
    start_transitions: np.ndarray  # float32 [labels]
    end_transitions: np.ndarray  # float32 [labels]

    @classmethod
    def of(cls, parts: dict[str, list]) -> Crf:
        """The CRF of its parameters by name (`crf.json`, or the torch module's as lists)."""
        return cls(**{part.name: np.asarray(parts[part.name], dtype=np.float32) for part in fields(cls)})

    def equals(self, other: Crf) -> bool:
        """The same scores, to the bit."""
        return all(np.array_equal(getattr(self, part.name), getattr(other, part.name)) for part in fields(self))


def served_crf(onnx_dir: Path, metadata: dict[str, Any]) -> Crf | None:
    """The CRF an exported model decodes with (`model.json`'s `decoding`), from `crf.json` beside the graph."""
    if metadata.get("decoding") != VITERBI:
        return None
    if not (onnx_dir / CRF_FILE).is_file():
        raise UserError(f"{onnx_dir / CRF_FILE} not found: the model decodes with a CRF; run the export stage again")
    return crf_beside(onnx_dir)


def crf_beside(onnx_dir: Path) -> Crf | None:
    """The CRF an export wrote beside its graph (`crf.json`), or None where it wrote none."""
    path = onnx_dir / CRF_FILE
    return Crf.of(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def viterbi(emissions: np.ndarray, attention_mask: np.ndarray, crf: Crf) -> np.ndarray:
    """The best label sequence of each row of `emissions` [batch, sequence, labels] over its tokens (a right-padded
    `attention_mask`, its first token on), as int64 [batch, sequence]; 0 on padding."""
    batch, length, labels = emissions.shape
    mask = attention_mask.astype(bool)
    score = crf.start_transitions + emissions[:, 0]
    history = np.zeros((batch, max(length - 1, 0), labels), dtype=np.int64)  # each step's best previous label
    for step in range(1, length):
        candidates = score[:, :, None] + crf.transitions + emissions[:, step, None, :]  # [batch, previous, next]
        best = candidates.argmax(axis=1)
        history[:, step - 1] = best
        score = np.where(mask[:, step, None], np.take_along_axis(candidates, best[:, None], axis=1)[:, 0], score)
    score = score + crf.end_transitions
    ends = mask.sum(axis=1) - 1
    rows = np.arange(batch)
    decoded = np.zeros((batch, length), dtype=np.int64)
    decoded[rows, ends] = score.argmax(axis=1)
    for step in range(length - 2, -1, -1):
        inside = step < ends
        decoded[inside, step] = history[rows[inside], step, decoded[inside, step + 1]]
    return decoded


def decoded_labels(crf: Crf | None, emissions: np.ndarray, attention_mask: np.ndarray) -> np.ndarray | None:
    """A batch's labels as the CRF decodes them; None for a head without one (each token takes its best score)."""
    return None if crf is None else viterbi(emissions, attention_mask, crf)


def check_aggregation(strategy: str, crf: Crf | None) -> None:
    """A CRF head's labels are decoded, not read from probabilities: only `simple` and `first` read labels."""
    if crf is not None and strategy not in (SIMPLE, WORD_CHOICE):
        raise UserError(
            f"infer.aggregation = {strategy} picks each word's label from its tokens' probabilities, but this model's "
            "CRF head decodes its labels (Viterbi); use infer.aggregation: first (each word its first token's decoded "
            "label) or simple"
        )
