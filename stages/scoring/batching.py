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


def plan_batches(
    lengths: Sequence[int], max_rows: int, max_tokens: int, max_attention: int | None = None
) -> Iterator[np.ndarray]:
    """Indices grouped longest first into batches of at most `max_rows` rows, `max_tokens` padded slots and
    `max_attention` rows x length^2 (attention's memory grows with the square of the padded length)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    while start < len(order):
        longest = max(lengths[order[start]], 1)
        rows = min(max_rows, max_tokens // longest)
        if max_attention is not None:
            rows = min(rows, max_attention // longest**2)
        rows = max(1, rows)
        yield order[start : start + rows]
        start += rows
