"""Batches of token sequences (windows): longest first under a row and a token budget, right-padded."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad token id sequences to the longest: `input_ids`, `attention_mask`, `token_type_ids` (int64)."""
    length = max(len(sequence) for sequence in sequences)
    input_ids = np.full((len(sequences), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), length), dtype=np.int64)
    for index, sequence in enumerate(sequences):
        input_ids[index, : len(sequence)] = sequence
        attention_mask[index, : len(sequence)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}


def plan_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> Iterator[np.ndarray]:
    """Indices grouped longest first into batches of at most `max_rows` rows and `max_tokens` padded slots."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    while start < len(order):
        longest = lengths[order[start]]
        rows = max(1, min(max_rows, max_tokens // max(longest, 1)))
        yield order[start : start + rows]
        start += rows
