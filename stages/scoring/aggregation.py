"""Spans from a row's token predictions, as Hugging Face's token-classification pipeline builds them for each
`aggregation_strategy` (`infer.aggregation`): `simple` groups tokens; `first`, `average` and `max` first give each
word one label, then group words the same way. One implementation serves `infer` and the parity gate.

A token starts a word unless the pipeline (transformers 5, `gather_pre_entities`) calls it a sub-word: where the
tokenizer's model marks continuing pieces (WordPiece's `##`), a token whose piece is not as long as the text it
covers; for any other (SentencePiece, byte-level BPE), a token past the text's first character with no space (U+0020)
just before it nor as its first character. The unknown token always starts a word. A word's label is its first
token's (`first`), that of its token with the highest probability (`max`), or the best of its tokens' mean
probabilities (`average`), and its score that probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.scoring.quality import Word
from stages.scoring.spans import aggregate_spans
from stages.scoring.tokens import TextTokenizer

SIMPLE = "simple"  # `infer.aggregation`'s token-level strategy; the others are word-level


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, as the pipeline computes them (float32 logits stay float32)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class WordRule:
    """How a tokenizer marks sub-words: each vocabulary id's piece length where its model has a continuing-piece
    prefix (else None), and its unknown token's id."""

    piece_lengths: np.ndarray | None
    unk_id: int | None

    @classmethod
    def of(cls, tokenizer: TextTokenizer) -> WordRule:
        """The rule the pipeline applies to this tokenizer."""
        backend = tokenizer.backend
        if not getattr(backend.model, "continuing_subword_prefix", None):
            return cls(None, tokenizer.unk_id)
        vocabulary = backend.get_vocab(with_added_tokens=True)
        lengths = np.zeros(max(vocabulary.values()) + 1, dtype=np.int64)
        lengths[list(vocabulary.values())] = [len(piece) for piece in vocabulary]
        return cls(lengths, tokenizer.unk_id)

    def word_firsts(self, text: str, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The index of each word's first token, for tokens `ids` at character `offsets` of `text`."""
        if not len(ids):
            return np.zeros(0, dtype=np.int64)
        if self.piece_lengths is not None:
            subword = self.piece_lengths[ids] != offsets[:, 1] - offsets[:, 0]
        else:
            subword = np.array(
                [start > 0 and " " not in text[start - 1 : start + 1] for start in offsets[:, 0].tolist()]
            )
        if self.unk_id is not None:
            subword &= ids != self.unk_id
        subword[0] = False
        return np.flatnonzero(~subword)


def word_labels(probabilities: np.ndarray, firsts: np.ndarray, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    """Each word's label id and score from its tokens' probabilities (words start at `firsts`), as the pipeline's
    `aggregate_word` computes them, to the bit (`average`: float32 sums, divided in float64, as `np.nanmean`)."""
    if strategy == "first":
        chosen = probabilities[firsts]
    elif strategy == "max":
        token_best = probabilities.max(axis=-1)
        word_of = np.repeat(np.arange(len(firsts)), np.diff([*firsts, len(probabilities)]))
        best = np.maximum.reduceat(token_best, firsts)
        candidates = np.where(token_best == best[word_of], np.arange(len(probabilities)), len(probabilities))
        chosen = probabilities[np.minimum.reduceat(candidates, firsts)]  # the first token with its word's best
    elif strategy == "average":
        chosen = word_means(probabilities, firsts)
    else:
        raise ValueError(f"not a word-level strategy: {strategy!r}")
    label_ids = chosen.argmax(axis=-1)
    return label_ids, chosen[np.arange(len(chosen)), label_ids]


def word_means(probabilities: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """Each word's mean probabilities, NaN left out, as `np.nanmean` over the word's stacked tokens computes them: summed
    token after token in float32 (`np.add.reduceat` sums in another order), divided in float64."""
    lengths = np.diff([*firsts, len(probabilities)])
    present = ~np.isnan(probabilities)
    values = np.where(present, probabilities, 0).astype(probabilities.dtype)
    sums, counts = values[firsts], present[firsts].astype(np.int64)
    for position in range(1, int(lengths.max())):
        longer = lengths > position
        sums[longer] += values[firsts[longer] + position]
        counts[longer] += present[firsts[longer] + position]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums.astype(np.float64) / counts).astype(probabilities.dtype)


@dataclass(frozen=True)
class RowReading:
    """A row's spans (`aggregate_spans`' dicts) and, under a word-level strategy, its words: character ranges (as
    their tokens' offsets give them) and labels."""

    spans: list[dict]
    word_starts: list[int] | None = None
    word_ends: list[int] | None = None
    word_labels: list[str] | None = None


@dataclass(frozen=True)
class Aggregation:
    """How rows' token predictions become spans: the strategy, the model's labels, the labels that form no spans
    and the tokenizer's word rule."""

    strategy: str
    labels: tuple[str, ...]
    ignore: frozenset[str]
    rule: WordRule

    @property
    def word_level(self) -> bool:
        return self.strategy != SIMPLE

    def read(
        self,
        text: str,
        ids: np.ndarray,
        offsets: np.ndarray,
        probabilities: np.ndarray,
        decoded: np.ndarray | None = None,
    ) -> RowReading:
        """The spans (and words) of one row's scored tokens: `ids` at `offsets`, with their label probabilities and,
        where a CRF decoded them, their labels (a word then takes its first token's: `first`); else each token's
        label is its most probable."""
        names = np.asarray(self.labels, dtype=object)
        if not self.word_level:
            chosen = probabilities.argmax(axis=-1) if decoded is None else decoded
            scores = probabilities[np.arange(len(chosen)), chosen]
            labels = names[chosen].tolist()
            return RowReading(aggregate_spans(text, labels, offsets[:, 0], offsets[:, 1], scores, self.ignore))
        firsts = self.rule.word_firsts(text, ids, offsets)
        if not len(firsts):
            return RowReading([], [], [], [])
        if decoded is None:
            label_ids, scores = word_labels(probabilities, firsts, self.strategy)
        else:
            label_ids, scores = decoded[firsts], probabilities[firsts, decoded[firsts]]
        starts = offsets[firsts, 0].tolist()
        ends = offsets[[*(firsts[1:] - 1), len(ids) - 1], 1].tolist()
        labels = names[label_ids].tolist()
        return RowReading(aggregate_spans(text, labels, starts, ends, scores, self.ignore), starts, ends, labels)


def word_ranges(starts: Sequence[int], ends: Sequence[int]) -> list[Word]:
    """Words' character ranges from the output's `word_starts` and `word_ends`."""
    return list(zip(starts, ends, strict=True))
