"""Quality against gold annotations, in the terms named-entity users report: entity precision, recall and F1 per
label on spans (exact boundaries and label, as seqeval's strict mode counts them), their micro and macro averages,
token accuracy and the token confusion matrix.

Spans are `(start, end, label)` character ranges with whitespace trimmed at both ends; two spans match when
all three are equal. Under a word-level `infer.aggregation` they are counted on words instead (`on_words`): a span is
the run of words it covers, as seqeval counts entities over a CoNLL file's words. Counts add up across blocks
(`EntityCounts.add`), so every engine reports the same numbers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from stages.scoring.spans import entity_of, trimmed

Span = tuple[int, int, str]
Word = tuple[int, int]  # a word's character range, end exclusive
OUTSIDE = "O"  # the confusion matrix's and token accuracy's name for "no entity"


@dataclass
class EntityCounts:
    """Matched, predicted and gold spans per label, token accuracy and the token confusion counts; they add up."""

    matched: dict[str, int] = field(default_factory=dict)
    predicted: dict[str, int] = field(default_factory=dict)
    gold: dict[str, int] = field(default_factory=dict)
    confusion: dict[str, int] = field(default_factory=dict)  # "gold|predicted" -> tokens
    rows: int = 0

    def add(self, other: EntityCounts) -> None:
        for name in ("matched", "predicted", "gold", "confusion"):
            merged = Counter(getattr(self, name))
            merged.update(getattr(other, name))
            setattr(self, name, dict(sorted(merged.items())))
        self.rows += other.rows

    def count_row(self, gold: Sequence[Span], predicted: Sequence[Span]) -> None:
        """Add one row's spans: each predicted span matches at most one gold span with the same range and label."""
        matched = Counter(gold) & Counter(predicted)
        for counts, spans in ((self.matched, matched.elements()), (self.predicted, predicted), (self.gold, gold)):
            for label, number in Counter(span[2] for span in spans).items():
                counts[label] = counts.get(label, 0) + number
        self.rows += 1

    def count_tokens(self, gold_types: Iterable[str], predicted_types: Iterable[str]) -> None:
        """Add tokens' gold and predicted entity types (`OUTSIDE` for none) to the confusion counts."""
        for pair, number in Counter(
            f"{gold}|{predicted}" for gold, predicted in zip(gold_types, predicted_types, strict=True)
        ).items():
            self.confusion[pair] = self.confusion.get(pair, 0) + number

    @property
    def tokens(self) -> int:
        return sum(self.confusion.values())

    @property
    def token_accuracy(self) -> float:
        correct = sum(number for pair, number in self.confusion.items() if len(set(pair.split("|"))) == 1)
        return correct / self.tokens if self.tokens else 1.0


def prf(matched: int, predicted: int, gold: int) -> dict[str, float]:
    """Precision, recall and F1 (0 where undefined, as seqeval's zero_division=0) and the gold support."""
    precision = matched / predicted if predicted else 0.0
    recall = matched / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}


def entity_scores(counts: EntityCounts) -> dict:
    """Per-label precision, recall, F1 and support; micro (pooled) and macro (mean over labels) averages. The
    labels are those in the gold or the predictions, as seqeval lists them; no spans at all is a perfect score."""
    labels = sorted({*counts.gold, *counts.predicted})
    per_label = {
        label: prf(counts.matched.get(label, 0), counts.predicted.get(label, 0), counts.gold.get(label, 0))
        for label in labels
    }
    total = [sum(values.values()) for values in (counts.matched, counts.predicted, counts.gold)]
    micro = prf(*total) if labels else {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 0}
    macro = {
        metric: sum(scores[metric] for scores in per_label.values()) / len(labels) if labels else 1.0
        for metric in ("precision", "recall", "f1")
    }
    return {"micro": micro, "macro": {**macro, "support": total[2]}, "per_label": per_label}


def span_agreement(reference: Sequence[Sequence[Span]], candidate: Sequence[Sequence[Span]]) -> float:
    """Micro F1 of one model's spans against another's (1.0 when neither has any)."""
    counts = EntityCounts()
    for expected, found in zip(reference, candidate, strict=True):
        counts.count_row(expected, found)
    return entity_scores(counts)["micro"]["f1"]


def predicted_spans(text: str, spans: Iterable[dict]) -> list[Span]:
    """Output spans (`aggregate_spans`'s dicts) in the form gold is compared in: without the whitespace at their ends
    (a SentencePiece token's range starts with its space, as Hugging Face's pipeline reports it)."""
    return [(*trimmed(text, span["start"], span["end"]), span["label"]) for span in spans]


def token_types(labels: Iterable[str], ignore: frozenset[str]) -> list[str]:
    """Each predicted token's entity type (`B-`/`I-` dropped), `OUTSIDE` for the labels that form no spans."""
    types = []
    for label in labels:
        entity, _ = entity_of(label)
        types.append(OUTSIDE if label in ignore or entity in ignore else entity)
    return types


def cut_gold(gold: Sequence[Span], offsets: np.ndarray) -> int:
    """How many gold spans reach beyond the scored tokens (their character `offsets`): in a truncated row, the spans
    in the cut text. They stay in the gold, so they count as misses: text left unscored is not left out."""
    if not len(gold):
        return 0
    if not len(offsets):
        return len(gold)
    first, last = int(offsets[0, 0]), int(offsets[-1, 1])
    return sum(1 for start, end, _ in gold if start < first or end > last)


def gold_token_types(text: str, offsets: Sequence[Sequence[int]], gold: Sequence[Span]) -> list[str]:
    """Each token's gold entity type: the span holding its first non-space character (a token of whitespace alone:
    the span around it), else `OUTSIDE`."""
    owner: dict[int, str] = {}
    for start, end, label in gold:
        owner.update(dict.fromkeys(range(start, end), label))
    types = []
    for start, end in offsets:
        first, stop = trimmed(text, int(start), int(end))
        types.append(owner.get(first if first < stop else int(start), OUTSIDE))
    return types


def on_words(spans: Iterable[Span], words: Sequence[Word], text: str) -> list[Span]:
    """Spans (in text order) as the runs of `words` they cover, `(first word, last word + 1, label)`: a word is covered
    by the first span that holds its first non-space character (a word takes its first sub-word's label, as the
    pipeline's `first` and the evaluation of first sub-word models read it; a SentencePiece "▁" piece of its own has
    its word's first character's offsets, so two spans can hold it). A span that covers no word is left out, as
    seqeval over words never sees it."""
    heads = [first for first, stop in (trimmed(text, start, end) for start, end in words) if first < stop]
    covered: list[Span] = []
    for start, end, label in spans:
        first = max(bisect_left(heads, start), covered[-1][1] if covered else 0)
        last = bisect_left(heads, end)
        if first < last:
            covered.append((first, last, label))
    return covered
