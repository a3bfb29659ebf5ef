"""Tokenisation, long-text windows and batching, shared by `parity` and `infer` so both see the same inputs.

Texts are tokenised whole (fast tokenizer, batch mode); the special tokens the tokenizer adds
around a single sequence are then put around each window of content tokens. `truncate` keeps one
window, cut on the tokenizer's truncation side; `sliding_window` covers every token with windows
that overlap by `stride` tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class EncodedText:
    """A text's content tokens (no special tokens): ids and character offsets."""

    input_ids: np.ndarray  # int64 [n]
    offsets: np.ndarray  # int32 [n, 2]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Window:
    """Model input for content tokens [start, start + length) of text `row`, special tokens around them."""

    row: int
    start: int
    length: int
    input_ids: np.ndarray  # int64, prefix + content + suffix

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Framing:
    """The special tokens a tokenizer puts before and after a single sequence."""

    prefix: np.ndarray
    suffix: np.ndarray
    max_length: int
    truncation_side: str

    @property
    def capacity(self) -> int:
        """Content tokens that fit in one window."""
        return self.max_length - len(self.prefix) - len(self.suffix)

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Framing:
        """Read the framing off the tokenizer's template by encoding a one-letter probe."""
        encoding = tokenizer("a", return_special_tokens_mask=True).encodings[0]
        ids, content = np.asarray(encoding.ids, dtype=np.int64), ~np.asarray(encoding.special_tokens_mask, dtype=bool)
        first, last = int(np.argmax(content)), len(content) - int(np.argmax(content[::-1]))
        return cls(ids[:first], ids[last:], max_length, tokenizer.truncation_side)


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[EncodedText]:
    """Content tokens of each text, whole (no truncation), with character offsets."""
    batch = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [
        EncodedText(
            input_ids=np.asarray(encoding.ids, dtype=np.int64),
            offsets=np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2),
        )
        for encoding in batch.encodings
    ]


def make_windows(texts: Sequence[EncodedText], framing: Framing, long_text: str, stride: int) -> list[Window]:
    """Windows of every text: one per text when truncating, overlapping ones for `sliding_window`."""
    windows = []
    for row, text in enumerate(texts):
        for start, length in window_spans(len(text), framing, long_text, stride):
            content = text.input_ids[start : start + length]
            windows.append(Window(row, start, length, np.concatenate([framing.prefix, content, framing.suffix])))
    return windows


def window_spans(tokens: int, framing: Framing, long_text: str, stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window over `tokens` content tokens."""
    capacity = framing.capacity
    if tokens <= capacity:
        return [(0, tokens)]
    if long_text == "truncate":
        return [(tokens - capacity, capacity) if framing.truncation_side == "left" else (0, capacity)]
    step = capacity - stride
    starts = [*list(range(0, tokens - capacity, step)), tokens - capacity]
    return [(start, capacity) for start in starts]


def most_central_window(tokens: int, windows: Sequence[Window]) -> np.ndarray:
    """For each content token, the index into `windows` of the window where it is most central (-1: none)."""
    best = np.full(tokens, -1, dtype=np.int64)
    best_margin = np.full(tokens, -1, dtype=np.int64)
    for index, window in enumerate(windows):
        positions = np.arange(window.start, window.start + window.length)
        margin = np.minimum(positions - window.start, window.start + window.length - 1 - positions)
        better = margin > best_margin[positions]
        best[positions[better]] = index
        best_margin[positions[better]] = margin[better]
    return best


def pad_batch(windows: Sequence[Window], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad windows to the longest: `input_ids`, `attention_mask`, `token_type_ids` (int64, one sequence)."""
    length = max(len(window) for window in windows)
    input_ids = np.full((len(windows), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(windows), length), dtype=np.int64)
    for index, window in enumerate(windows):
        input_ids[index, : len(window)] = window.input_ids
        attention_mask[index, : len(window)] = 1
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
