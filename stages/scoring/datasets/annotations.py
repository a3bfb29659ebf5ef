"""Gold annotations in the formats users hold, read into character spans `(start, end, label)`.

* spans: a list per row of `{"start", "end", "label"}` objects (doccano, spaCy), Label Studio's
  `{"start", "end", "labels": [...]}`, or `[start, end, label]` triples; end exclusive, character offsets.
* tags: words and one tag per word (the Hugging Face CoNLL-2003 and WikiANN shape: `tokens` + `ner_tags`,
  strings or ids named by `annotations.tag_names`), in the `iob2` (BIO), `iob1` or `io` (plain labels)
  scheme; the words are found in the row's text in order, or joined by spaces where the dataset has no text.
* CoNLL text files (`.conll`): one word per line with its tag last, a blank line between sentences
  (`stages.scoring.datasets.blocks` reads them as tags).

A span outside its text, an empty span, spans that overlap, a tag that breaks its scheme, a word not found in
the text: a `UserError` naming the row and how to fix it. Labels are checked against the model's in
`gold_for_model`, which also merges, for a model whose labels carry no `B-`, adjacent spans of one label that
only whitespace separates (such a model cannot tell them apart, as seqeval scores IO tags).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from stages.core.errors import UserError
from stages.core.params import AnnotationParams
from stages.scoring.quality import Span, Word
from stages.scoring.spans import BEGIN, INSIDE, entity_of, trimmed

OUTSIDE_TAG = "O"


class AnnotationError(UserError):
    """A gold annotation that cannot be right: names the row and the fix."""


def gold_columns(annotations: AnnotationParams, columns: Sequence[str], name: str) -> tuple[str, tuple[str, ...]]:
    """Which gold format the dataset holds and its columns: (`spans`, (column,)), (`tags`, (words, tags)) or
    (`none`, ()), as `annotations.format` asks (auto: by the columns present)."""
    spans, tags = (annotations.spans_column,), (annotations.words_column, annotations.tags_column)
    if annotations.format == "none":
        return "none", ()
    if annotations.format == "auto":
        if spans[0] in columns:
            return "spans", spans
        return ("tags", tags) if all(column in columns for column in tags) else ("none", ())
    wanted = spans if annotations.format == "spans" else tags
    missing = [column for column in wanted if column not in columns]
    if missing:
        raise UserError(
            f"dataset {name} has no column {missing[0]!r} (annotations.format = {annotations.format}); its columns are: "
            f"{', '.join(columns)}; name the column in annotations, or set annotations.format: auto"
        )
    return annotations.format, wanted


def decoded(value: Any) -> Any:
    """A CSV cell holding JSON, decoded; other values as they are."""
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def row_spans(value: Any, text: str, where: str) -> list[Span]:
    """One row's gold spans from a spans column value, trimmed, checked and in order."""
    value = decoded(value)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        kind = "text that is not JSON" if isinstance(value, str | bytes) else type(value).__name__
        raise AnnotationError(f"{where}: its spans are {kind}, not a list of {{start, end, label}}")
    spans = []
    for item in value:
        start, end, label = span_fields(item, where)
        if not 0 <= start < end <= len(text):
            raise AnnotationError(
                f"{where}: span {start}-{end} {label!r} lies outside its text of {len(text)} characters; "
                "offsets count characters from 0, end exclusive"
            )
        first, stop = trimmed(text, start, end)
        if first == stop:
            raise AnnotationError(f"{where}: span {start}-{end} {label!r} holds only whitespace; remove it")
        spans.append((first, stop, label))
    return checked_order(spans, where)


def span_fields(item: Any, where: str) -> tuple[int, int, str]:
    """`(start, end, label)` of one span object or triple."""
    if isinstance(item, dict):
        labels = item.get("labels")
        label = item.get("label", labels[0] if isinstance(labels, list) and len(labels) == 1 else None)
        start, end = item.get("start"), item.get("end")
    elif isinstance(item, list | tuple) and len(item) == 3:
        start, end, label = item
    else:
        start = end = label = None
    if not (isinstance(start, int) and isinstance(end, int) and isinstance(label, str) and label):
        raise AnnotationError(
            f"{where}: span {item!r} is not {{start: int, end: int, label: str}} (or [start, end, label]); fix that span"
        )
    return start, end, label


def checked_order(spans: list[Span], where: str) -> list[Span]:
    """The spans sorted; overlapping spans are an error (one label per character)."""
    spans = sorted(spans)
    for before, after in itertools.pairwise(spans):
        if after[0] < before[1]:
            raise AnnotationError(
                f"{where}: spans {before[0]}-{before[1]} {before[2]!r} and {after[0]}-{after[1]} {after[2]!r} overlap; "
                "token classification gives each character one label"
            )
    return spans


def word_offsets(words: Sequence[str], text: str | None, where: str) -> tuple[str, list[tuple[int, int]]]:
    """The text (the words joined by spaces where there is none) and each word's range in it, found in order."""
    if text is None:
        text = " ".join(words)
    offsets, cursor = [], 0
    for word in words:
        start = text.find(word, cursor)
        if start < 0 or not word:
            raise AnnotationError(
                f"{where}: word {word!r} is not in its text after character {cursor}; the words must be the text's, in order"
            )
        offsets.append((start, start + len(word)))
        cursor = start + len(word)
    return text, offsets


def tag_names_of(tags: Sequence[Any], names: tuple[str, ...] | None, where: str) -> list[str]:
    """Tags as strings: ids are named by `annotations.tag_names`."""
    named = []
    for tag in tags:
        if isinstance(tag, str):
            named.append(tag)
        elif isinstance(tag, int) and names is not None and 0 <= tag < len(names):
            named.append(names[tag])
        else:
            raise AnnotationError(
                f"{where}: tag {tag!r} is not a tag name"
                + (f" nor an id below {len(names)}" if names else "; set annotations.tag_names to name tag ids")
            )
    return named


def tag_spans(
    words: Sequence[str], tags: Sequence[Any], text: str | None, annotations: AnnotationParams, where: str
) -> tuple[str, list[Span], list[Word]]:
    """The text, the gold spans of words tagged in `annotations.scheme`, and the words' character ranges."""
    words, tags = list(decoded(words) or []), list(decoded(tags) or [])
    if len(words) != len(tags):
        raise AnnotationError(f"{where}: {len(words)} words but {len(tags)} tags; give each word one tag")
    text, offsets = word_offsets(words, text, where)
    named = tag_names_of(tags, annotations.tag_names, where)
    spans: list[list] = []  # [start, end, label] of the entity being read
    previous = OUTSIDE_TAG
    for index, ((start, end), tag) in enumerate(zip(offsets, named, strict=True)):
        if tag == OUTSIDE_TAG:
            previous = tag
            continue
        entity, begins = entity_of(tag)
        continues = spans and entity_of(previous)[0] == entity and previous != OUTSIDE_TAG
        if annotations.scheme == "iob2" and not tag.startswith((BEGIN, INSIDE)):
            raise AnnotationError(
                f"{where}: tag {tag!r} has no B-/I- prefix; set annotations.scheme: io for plain labels"
            )
        if annotations.scheme == "iob2" and not begins and not continues:
            raise AnnotationError(
                f"{where}: tag {tag!r} of word {index} ({words[index]!r}) follows "
                f"{previous!r}, which IOB2 (BIO) does not allow; fix the tag, or set annotations.scheme: iob1"
            )
        if continues and not (begins and annotations.scheme != "io"):
            spans[-1][1] = end
        else:
            spans.append([start, end, entity])
        previous = tag
    return text, [(start, end, label) for start, end, label in spans], offsets


def gold_for_model(
    spans: Sequence[Span], text: str, labels: Sequence[str], ignore: frozenset[str], where: str
) -> list[Span]:
    """Gold spans as the model can predict them: labels checked against the model's entities; for a model without
    `B-` labels, adjacent spans of one label separated by whitespace alone merged."""
    entities = {entity_of(label)[0] for label in labels} - ignore
    unknown = sorted({label for _, _, label in spans} - entities)
    if unknown:
        raise AnnotationError(
            f"{where}: label {unknown[0]!r} is not one of the model's entities ({', '.join(sorted(entities))}); "
            "fix the annotation, or name the labels as model.labels does"
        )
    if any(label.startswith(BEGIN) for label in labels):
        return list(spans)
    merged: list[Span] = []
    for start, end, label in spans:
        if merged and merged[-1][2] == label and not text[merged[-1][1] : start].strip():
            merged[-1] = (merged[-1][0], end, label)
        else:
            merged.append((start, end, label))
    return merged
