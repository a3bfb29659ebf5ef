"""Token windows: the model inputs cut from a text's tokens. `truncate` keeps one window, cut on the
tokenizer's truncation side; `sliding_window` covers every token with windows overlapping by `stride`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.core.errors import UserError
from stages.scoring.tokens import EncodedText, Framing


@dataclass(frozen=True)
class Window:
    """Model input for content tokens [start, start + length) of text `row`, special tokens around them."""

    row: int
    start: int
    length: int
    input_ids: np.ndarray  # int64, prefix + content + suffix

    def __len__(self) -> int:
        return len(self.input_ids)


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


def check_stride(long_text: str, stride: int, framing: Framing) -> None:
    """Sliding windows must advance: the stride must be shorter than a window's content."""
    if long_text == "sliding_window" and stride >= framing.capacity:
        raise UserError(
            f"infer.stride = {stride} must be smaller than the {framing.capacity} content tokens of a window"
        )
