"""Tokenisation and batching shared by `parity` and `infer`, so both see exactly the same inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class EncodedText:
    """One text's tokens: ids, token types, character offsets, which are special, and whether it was cut."""

    input_ids: np.ndarray  # int64 [n]
    token_type_ids: np.ndarray  # int64 [n]
    offsets: np.ndarray  # int32 [n, 2], character start/end in the text
    special: np.ndarray  # bool [n], True for [CLS]/[SEP]-like tokens
    truncated: bool

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[EncodedText]:
    """Tokenise with the fast tokenizer's batch mode, truncating on the tokenizer's side at `max_length`."""
    batch = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    return [
        EncodedText(
            input_ids=np.asarray(encoding.ids, dtype=np.int64),
            token_type_ids=np.asarray(encoding.type_ids, dtype=np.int64),
            offsets=np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2),
            special=np.asarray(encoding.special_tokens_mask, dtype=bool),
            truncated=bool(encoding.overflowing),
        )
        for encoding in batch.encodings
    ]


def pad_batch(rows: Sequence[EncodedText], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad rows to the longest one: `input_ids`, `attention_mask`, `token_type_ids` (all int64)."""
    length = max(len(row) for row in rows)
    input_ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), length), dtype=np.int64)
    token_type_ids = np.zeros((len(rows), length), dtype=np.int64)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = row.input_ids
        attention_mask[index, : len(row)] = 1
        token_type_ids[index, : len(row)] = row.token_type_ids
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (longest first), to cut padding."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
