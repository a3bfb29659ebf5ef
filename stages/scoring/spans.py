"""Word/entity spans from token labels, as Hugging Face's `aggregation_strategy="simple"` groups them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BEGIN, INSIDE = "B-", "I-"


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
    spans: list[dict] = []
    group: list[int] = []
    current = None

    def close() -> None:
        if group and current not in ignore:
            start, end = int(starts[group[0]]), int(ends[group[-1]])
            spans.append(
                {
                    "label": current,
                    "start": start,
                    "end": end,
                    "text": text[start:end],
                    "score": float(scores[group].mean()),
                }
            )

    for index, label in enumerate(labels):
        entity, begins = entity_of(label)
        if entity != current or begins:
            close()
            group, current = [], entity
        group.append(index)
    close()
    return spans
