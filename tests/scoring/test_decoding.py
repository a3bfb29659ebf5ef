"""A CRF head's labels: the numpy Viterbi `infer` and the gate decode with is pytorch-crf's `CRF.decode`, row for row,
on a padded batch of rows of every length, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchcrf

from stages.core.errors import UserError
from stages.scoring.decoding import Crf, check_aggregation, viterbi


def reference_decode(emissions: np.ndarray, mask: np.ndarray, crf: Crf) -> list[list[int]]:
    """pytorch-crf's `CRF.decode` with `crf`'s scores (the reference library itself, not a copy of its algorithm)."""
    module = torchcrf.CRF(emissions.shape[-1], batch_first=True)
    with torch.no_grad():
        for part in ("transitions", "start_transitions", "end_transitions"):
            getattr(module, part).copy_(torch.from_numpy(getattr(crf, part)))
        return module.decode(torch.from_numpy(emissions), torch.from_numpy(mask.astype(bool)))


def random_case(seed: int, batch: int, length: int, labels: int, integers: bool = False) -> tuple:
    """Emissions, a right-padded mask (rows of 1..length tokens, the first row full) and a CRF; with `integers`,
    small whole numbers, so that many paths tie."""
    generator = np.random.default_rng(seed)

    def draw(*shape: int) -> np.ndarray:
        values = generator.integers(-2, 3, shape) if integers else generator.normal(0, 2, shape)
        return values.astype(np.float32)

    lengths = np.concatenate([[length], generator.integers(1, length + 1, batch - 1)])
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    crf = Crf(draw(labels, labels), draw(labels), draw(labels))
    return draw(batch, length, labels), mask, crf


@pytest.mark.parametrize(
    ("seed", "batch", "length", "labels"), [(0, 1, 1, 3), (1, 5, 2, 4), (2, 16, 40, 4), (3, 9, 130, 9), (4, 3, 7, 1)]
)
def test_viterbi_equals_pytorch_crf_decode(seed, batch, length, labels):
    emissions, mask, crf = random_case(seed, batch, length, labels)
    decoded = viterbi(emissions, mask, crf)
    reference = reference_decode(emissions, mask, crf)
    for row, expected in enumerate(reference):
        assert decoded[row, : len(expected)].tolist() == expected, row
        assert not decoded[row, len(expected) :].any()  # 0 on padding


def test_viterbi_breaks_ties_as_pytorch_crf_does():
    emissions, mask, crf = random_case(5, 64, 12, 4, integers=True)
    decoded = viterbi(emissions, mask, crf)
    for row, expected in enumerate(reference_decode(emissions, mask, crf)):
        assert decoded[row, : len(expected)].tolist() == expected, row


def test_the_transitions_decide_the_labels():
    """Emissions that prefer label 1 everywhere, a CRF that forbids 1 -> 1: the labels alternate."""
    emissions = np.tile(np.array([0.0, 1.0], np.float32), (1, 4, 1))
    forbid = Crf(np.array([[0, 0], [0, -10]], np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32))
    assert viterbi(emissions, np.ones((1, 4), np.int64), forbid).tolist() == [[1, 0, 1, 0]]


def test_a_crf_heads_labels_are_read_only_by_label_strategies():
    crf = Crf(np.zeros((2, 2), np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32))
    check_aggregation("first", crf)
    check_aggregation("average", None)
    with pytest.raises(UserError, match=r"infer\.aggregation = average .* use infer\.aggregation: first"):
        check_aggregation("average", crf)
