"""Word/entity spans from token labels, as Hugging Face's `aggregation_strategy="simple"` groups them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BEGIN, INSIDE = "B-", "I-"


def trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """`[start, end)` without the whitespace at its ends (an empty range stays where it is)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def entity_of(label: str) -> tuple[str, bool]:
    """(entity name, starts a new span) of a label: `B-PER` -> (PER, True), `I-PER`/`PER` -> (PER, False)."""
    if label.startswith(BEGIN):
        return label[len(BEGIN) :], True
    if label.startswith(INSIDE):
        return label[len(INSIDE) :], False
    return label, False


def aggregate_spans(
    text: str,
    labels: Sequence[str],
    starts: Sequence[int],
    ends: Sequence[int],
    scores: np.ndarray,
    ignore: frozenset[str],
) -> list[dict]:
    """Adjacent tokens of one entity merged into spans: label, start, end, text, score (mean token score)."""
    firsts: list[int] = []  # each group's first token
    entities: list[str] = []
    current = None
    for index, label in enumerate(labels):
        entity, begins = entity_of(label)
        if entity != current or begins:
            firsts.append(index)
            entities.append(entity)
            current = entity
    if not firsts:
        return []
    lasts = [*(first - 1 for first in firsts[1:]), len(labels) - 1]
    means = np.add.reduceat(np.asarray(scores, dtype=np.float64), firsts) / (np.asarray(lasts) - firsts + 1)
    spans = []
    for entity, first, last, mean in zip(entities, firsts, lasts, means.tolist(), strict=True):
        if entity in ignore:
            continue
        start, end = int(starts[first]), int(ends[last])
        spans.append({"label": entity, "start": start, "end": end, "text": text[start:end], "score": mean})
    return spans
