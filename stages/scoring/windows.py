"""Token windows: the model inputs cut from a text's tokens. `truncate` keeps one window, cut on the
tokenizer's truncation side; `sliding_window` covers every token with windows overlapping by `stride`. A row's
prediction is merged back from its windows, each token's from the window where it is most central."""

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


DEFAULT_STRIDE = 128


def make_windows(texts: Sequence[EncodedText], framing: Framing, long_text: str, stride: int | None) -> list[Window]:
    """Windows of every text: one per text when truncating, overlapping ones for `sliding_window`."""
    check_stride(long_text, stride, framing)
    windows = []
    for row, text in enumerate(texts):
        for start, length in window_spans(len(text), framing, long_text, stride):
            content = text.input_ids[start : start + length]
            windows.append(Window(row, start, length, np.concatenate([framing.prefix, content, framing.suffix])))
    return windows


def window_spans(tokens: int, framing: Framing, long_text: str, stride: int | None) -> list[tuple[int, int]]:
    """(start, length) of each window over `tokens` content tokens."""
    capacity = framing.capacity
    if tokens <= capacity:
        return [(0, tokens)]
    if long_text == "truncate":
        return [(tokens - capacity, capacity) if framing.truncation_side == "left" else (0, capacity)]
    step = capacity - sliding_stride(stride, framing)
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


def sliding_stride(stride: int | None, framing: Framing) -> int:
    """The tokens consecutive windows share: `stride` as set, or unset, 128 or half a window's content if less."""
    return min(DEFAULT_STRIDE, framing.capacity // 2) if stride is None else stride


def check_stride(long_text: str, stride: int | None, framing: Framing) -> None:
    """Sliding windows must advance: the stride must be shorter than a window's content."""
    if long_text == "sliding_window" and sliding_stride(stride, framing) >= framing.capacity:
        raise UserError(
            f"infer.stride = {stride} must be smaller than the {framing.capacity} content tokens of a window "
            f"(model.max_length {framing.max_length} less its special tokens); set infer.stride to at most "
            f"{framing.capacity - 1}, e.g. {framing.capacity // 4}"
        )


@dataclass(frozen=True)
class RowPrediction:
    """One row's results for the content tokens its windows cover."""

    positions: np.ndarray  # int64 [n], indices into the row's content tokens
    label_ids: np.ndarray  # int16 [n]
    probabilities: np.ndarray  # float32 [n, labels]


@dataclass
class WindowOutputs:
    """Each window's content tokens' scores (probabilities or logits) and, where a CRF decoded them, labels, taken
    batch by batch from the model's outputs on padded windows (each window's content after `prefix` special tokens)."""

    scores: list[np.ndarray]
    labels: list[np.ndarray] | None  # None: each token takes its best score

    @classmethod
    def empty(cls, windows: int, num_labels: int, decoded: bool) -> WindowOutputs:
        nothing = np.empty((0, num_labels), np.float32)
        return cls([nothing] * windows, [np.empty(0, np.int64)] * windows if decoded else None)

    def take(
        self, indices: np.ndarray, windows: list[Window], prefix: int, scores: np.ndarray, labels: np.ndarray | None
    ) -> None:
        """One batch's outputs: `scores` [batch, sequence, labels] and the decoded `labels` [batch, sequence] of the
        windows at `indices`, in batch order."""
        for position, index in enumerate(indices):
            content = slice(prefix, prefix + windows[index].length)
            self.scores[index] = scores[position, content]
            if self.labels is not None and labels is not None:
                self.labels[index] = labels[position, content]


def merge_windows(counts: dict[int, int], windows: list[Window], outputs: WindowOutputs) -> list[RowPrediction]:
    """The prediction of each row of `counts` (row -> its content token count) from its windows."""
    by_row: dict[int, list[int]] = {}
    for index in sorted(range(len(windows)), key=lambda index: windows[index].start):  # ties go to the earlier window
        by_row.setdefault(windows[index].row, []).append(index)
    return [
        merged_prediction(
            count,
            [windows[index] for index in by_row[row]],
            [outputs.scores[index] for index in by_row[row]],
            None if outputs.labels is None else [outputs.labels[index] for index in by_row[row]],
        )
        for row, count in counts.items()
    ]


def merged_prediction(
    tokens: int, windows: list[Window], probabilities: list[np.ndarray], labels: list[np.ndarray] | None
) -> RowPrediction:
    """A row's prediction: each token's from the window where it is most central; tokens no window covers dropped.
    Its labels are the windows' decoded `labels` where given, else each token's best score."""
    choice = most_central_window(tokens, windows)
    covered = np.flatnonzero(choice >= 0)
    merged = np.empty((len(covered), probabilities[0].shape[-1]), dtype=np.float32)
    decoded = np.empty(len(covered), dtype=np.int64)
    for local, window in enumerate(windows):
        positions = covered[choice[covered] == local]
        merged[np.searchsorted(covered, positions)] = probabilities[local][positions - window.start]
        if labels is not None:
            decoded[np.searchsorted(covered, positions)] = labels[local][positions - window.start]
    label_ids = merged.argmax(axis=-1) if labels is None else decoded
    return RowPrediction(positions=covered, label_ids=label_ids.astype(np.int16), probabilities=merged)
