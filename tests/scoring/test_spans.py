"""Spans: adjacent tokens of one entity merged, B-/I- prefixes understood."""

from __future__ import annotations

import numpy as np

from stages.scoring.spans import aggregate_spans


def test_spans_group_adjacent_tokens_like_simple_aggregation():
    text = "Anna Smith went to New York"
    labels = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    starts, ends = [0, 5, 11, 16, 19, 23], [4, 10, 15, 18, 22, 27]
    scores = np.array([0.9, 0.7, 0.99, 0.99, 0.8, 0.6], dtype=np.float32)
    spans = aggregate_spans(text, labels, starts, ends, scores, frozenset({"O"}))
    assert [(s["label"], s["text"], round(s["score"], 3)) for s in spans] == [
        ("PER", "Anna Smith", 0.8),
        ("LOC", "New York", 0.7),
    ]
    assert aggregate_spans(text, ["B-PER", "B-PER"], [0, 5], [4, 10], scores[:2], frozenset())[1]["text"] == "Smith"
