"""Entity precision, recall and F1 against seqeval, the reference implementation, on thousands of real rows."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from stages.core.params import AnnotationParams
from stages.scoring.datasets.annotations import gold_for_model, tag_spans
from stages.scoring.quality import EntityCounts, entity_scores, gold_token_types
from tools.demo.rules import character_labels
from tools.generate.real_text import REAL_TEXT

IOB2_TAGS = AnnotationParams("tags", "entities", "tokens", "ner_tags", "iob2", None)
TYPES = ("NUMBER", "CAPITALIZED", "CJK")


def word_tags(words: list[str], rng: random.Random) -> list[str]:
    """IOB2 tags of real words: each word's type is the demo rule's for its first character; a run of one type is
    one entity, or two where a coin says so (B- inside the run)."""
    tags, previous = [], None
    for word in words:
        kind = character_labels(word)[0]
        if kind is None:
            tags.append("O")
        else:
            tags.append(f"{'I' if kind == previous and rng.random() < 0.7 else 'B'}-{kind}")
        previous = kind
    return tags


def perturbed(tags: list[str], rng: random.Random) -> list[str]:
    """A prediction of the same words: some entities lost, relabelled, cut in two or run on by a word, and some
    spurious ones, written as well-formed IOB2."""
    entities = []  # [first word, last word, type]
    for index, tag in enumerate(tags):
        if tag.startswith("B-"):
            entities.append([index, index, tag[2:]])
        elif tag.startswith("I-"):
            entities[-1][1] = index
    found = []
    for first, last, kind in entities:
        draw = rng.random()
        if draw < 0.05:
            continue
        if draw < 0.10:
            kind = rng.choice([other for other in TYPES if other != kind])
        if draw > 0.92 and last > first:
            found.append([first, first, kind])
            first += 1
        if draw < 0.02 and last + 1 < len(tags) and tags[last + 1] == "O":
            last += 1
        found.append([first, last, kind])
    taken = {index for first, last, _ in found for index in range(first, last + 1)}
    found += [
        [index, index, rng.choice(TYPES)] for index in range(len(tags)) if index not in taken and rng.random() < 0.03
    ]
    result = ["O"] * len(tags)
    for first, last, kind in found:
        result[first : last + 1] = [f"B-{kind}"] + [f"I-{kind}"] * (last - first)
    return result


def real_rows() -> list[list[str]]:
    """The words of 4,000 real rows: GNOME's translations in 118 languages and the demo's synthetic rows."""
    texts = (
        pd.read_parquet(REAL_TEXT).text.tolist() + pd.read_parquet("data/demo.parquet").text.dropna().tolist()[:2000]
    )
    return [words for text in texts if (words := text.split())]


def test_entity_scores_equal_seqevals_on_thousands_of_real_rows():
    rng = random.Random(0)
    gold_tags, found_tags, counts = [], [], EntityCounts()
    for words in real_rows():
        gold = word_tags(words, rng)
        found = perturbed(gold, rng)
        gold_tags.append(gold)
        found_tags.append(found)
        (_, gold_spans, _), (_, found_spans, _) = (
            tag_spans(words, tags, None, IOB2_TAGS, "row") for tags in (gold, found)
        )
        counts.count_row(gold_spans, found_spans)
    assert len(gold_tags) >= 3900 and sum(counts.gold.values()) > 5000
    ours = entity_scores(counts)
    theirs = classification_report(gold_tags, found_tags, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    for label in TYPES:
        for metric in ("precision", "recall", "f1"):
            assert ours["per_label"][label][metric] == pytest.approx(
                theirs[label][f"{metric}-score" if metric == "f1" else metric]
            )
        assert ours["per_label"][label]["support"] == theirs[label]["support"]
    for average in ("micro", "macro"):
        assert ours[average]["f1"] == pytest.approx(theirs[f"{average} avg"]["f1-score"])
        assert ours[average]["precision"] == pytest.approx(theirs[f"{average} avg"]["precision"])
        assert ours[average]["recall"] == pytest.approx(theirs[f"{average} avg"]["recall"])
    assert 0.5 < ours["micro"]["f1"] < 0.95  # the perturbations cost something, and not everything


def test_a_model_with_plain_labels_reads_adjacent_entities_of_one_type_as_one():
    text = "Jean Dupont Marie 12 34, 5"
    gold = [(0, 11, "CAPITALIZED"), (12, 17, "CAPITALIZED"), (18, 20, "NUMBER"), (21, 23, "NUMBER"), (25, 26, "NUMBER")]
    plain = ("O", "NUMBER", "CAPITALIZED", "CJK")
    assert gold_for_model(gold, text, plain, frozenset({"O"}), "row") == [
        (0, 17, "CAPITALIZED"), (18, 23, "NUMBER"), (25, 26, "NUMBER"),
    ]  # fmt: skip
    bio = ("O", "B-NUMBER", "I-NUMBER", "B-CAPITALIZED", "I-CAPITALIZED")
    assert gold_for_model(gold[:4], text, bio, frozenset({"O"}), "row") == gold[:4]


def test_each_token_takes_the_type_of_the_span_holding_its_first_character():
    text = "Moscow 1,234 ok"
    gold = [(0, 6, "CAPITALIZED"), (7, 12, "NUMBER")]
    offsets = [(0, 3), (3, 6), (6, 7), (7, 9), (9, 12), (12, 15)]  # "Mos" "cow" " " "1," "234" " ok"
    assert gold_token_types(text, offsets, gold) == ["CAPITALIZED", "CAPITALIZED", "O", "NUMBER", "NUMBER", "O"]
    counts = EntityCounts()
    counts.count_tokens(gold_token_types(text, offsets, gold), ["CAPITALIZED", "O", "O", "NUMBER", "NUMBER", "O"])
    assert counts.token_accuracy == pytest.approx(5 / 6)
    assert counts.confusion == {"CAPITALIZED|CAPITALIZED": 1, "CAPITALIZED|O": 1, "NUMBER|NUMBER": 2, "O|O": 2}
