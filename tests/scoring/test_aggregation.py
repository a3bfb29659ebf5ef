"""Word-level aggregation is the Hugging Face pipeline's, piece by piece: which tokens start words for a SentencePiece,
a WordPiece and a byte-level BPE tokenizer, each word's label and score, and the spans, against transformers' own
`TokenClassificationPipeline` methods on the same tokens and probabilities (real rows, then any text); and entity
F1 on words is seqeval's."""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, TokenClassificationPipeline
from transformers.pipelines.token_classification import AggregationStrategy

from stages.core.params import AnnotationParams
from stages.model.backbone import save_tokenizer
from stages.model.tokenizer_layout import load_tokenizer
from stages.scoring.aggregation import Aggregation, WordRule, word_labels
from stages.scoring.datasets.annotations import tag_spans
from stages.scoring.quality import EntityCounts, entity_scores, on_words
from stages.scoring.spans import aggregate_spans
from stages.scoring.tokens import TextTokenizer
from tests.first_subword import BACKBONES, WORD_LABELS
from tests.layouts import layout_files, real_texts

STRATEGIES = ("simple", "first", "average", "max")
ODD = [
    "",
    " ",
    "a",
    "\t\n x",
    "  two  spaces ",
    "x" * 300,
    "[CLS] <s> [UNK] ##a",
    "Émile 1,234.5 東京 Zoë's",
    "\u3000全角",
]
IOB2_TAGS = AnnotationParams("tags", "entities", "tokens", "ner_tags", "iob2", None)
SCRIPTS = "Hello Привет 你好 مرحبا é\u0301 1,2.3 -'\"#\t\n\u00a0\u3000"


@pytest.fixture(scope="module", params=list(BACKBONES))
def reader(request, tmp_path_factory) -> tuple[TextTokenizer, TokenClassificationPipeline]:
    """A tokenizer as infer loads it (tokenizer.json saved as load_checkpoint saves it) and the pipeline on the same
    files, with a model of the family (its weights do not matter: the probabilities are given)."""
    files = layout_files(BACKBONES[request.param])
    saved = tmp_path_factory.mktemp(request.param)
    save_tokenizer(load_tokenizer(files, str(files), model_max_length=128, truncation_side="left"), saved)
    labels = dict(enumerate(WORD_LABELS))
    config = AutoConfig.from_pretrained(files, id2label=labels, label2id={v: k for k, v in labels.items()})
    model = AutoModelForTokenClassification.from_config(config)
    return TextTokenizer.load(Path(saved)), TokenClassificationPipeline(
        model=model, tokenizer=AutoTokenizer.from_pretrained(saved)
    )


def pipelines_reading(pipe: TokenClassificationPipeline, text: str, probabilities: np.ndarray) -> tuple:
    """The pipeline's postprocess of a text's tokens with these probabilities: the index of each word's first token,
    each word-level strategy's word labels and scores, and each strategy's spans (`O` ignored)."""
    encoding = pipe.tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Tokenizer does not support real words, using fallback heuristic"
        pre_entities = pipe.gather_pre_entities(
            text, np.array(encoding["input_ids"]), probabilities, encoding["offset_mapping"],
            np.array(encoding["special_tokens_mask"]), AggregationStrategy.FIRST,
        )  # fmt: skip
    words = [index for index, entity in enumerate(pre_entities) if index == 0 or not entity["is_subword"]]
    labelled = {  # each word's label and score
        strategy: [(word["entity"], word["score"]) for word in pipe.aggregate_words(pre_entities, strategy)]
        for strategy in (AggregationStrategy.FIRST, AggregationStrategy.AVERAGE, AggregationStrategy.MAX)
    } if pre_entities else {}  # fmt: skip
    spans = {
        strategy: [
            (group["entity_group"], group["start"], group["end"], float(group["score"]))
            for group in pipe.aggregate(pre_entities, AggregationStrategy[strategy.upper()])
            if group["entity_group"] != "O"
        ]
        for strategy in STRATEGIES
    }
    return words, labelled, spans


def assert_read_as_the_pipeline_reads(tokenizer: TextTokenizer, pipe, texts: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    rule = WordRule.of(tokenizer)
    for text, encoded in zip(texts, tokenizer.encode(texts), strict=True):
        probabilities = rng.dirichlet(np.full(len(WORD_LABELS), 0.3), size=len(encoded)).astype(np.float32)
        words, labelled, spans = pipelines_reading(pipe, text, probabilities)
        firsts = rule.word_firsts(text, encoded.input_ids, encoded.offsets)
        assert firsts.tolist() == words, text
        for strategy, theirs in labelled.items():  # to the bit
            label_ids, scores = word_labels(probabilities, firsts, strategy.value)
            assert list(zip(np.asarray(WORD_LABELS)[label_ids], scores, strict=True)) == theirs, (strategy, text)
        for strategy in STRATEGIES:
            aggregation = Aggregation(strategy, WORD_LABELS, frozenset({"O"}), rule)
            reading = aggregation.read(text, encoded.input_ids, encoded.offsets, probabilities)
            mine = [(span["label"], span["start"], span["end"]) for span in reading.spans]
            assert mine == [span[:3] for span in spans[strategy]], (strategy, text)
            scores = [span["score"] for span in reading.spans]
            assert scores == pytest.approx([span[3] for span in spans[strategy]], rel=1e-6), (strategy, text)


def test_words_labels_and_spans_are_the_pipelines_on_real_rows(reader):
    tokenizer, pipe = reader
    assert WordRule.of(tokenizer).unk_id == pipe.tokenizer.unk_token_id
    assert_read_as_the_pipeline_reads(tokenizer, pipe, real_texts()[::50] + ODD, seed=0)


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(st.one_of(st.text(max_size=60), st.text(alphabet=SCRIPTS, max_size=120)), min_size=1, max_size=4))
def test_any_text_is_read_as_the_pipeline_reads_it(reader, texts):
    tokenizer, pipe = reader
    assert_read_as_the_pipeline_reads(tokenizer, pipe, texts, seed=len(texts))


def test_a_word_takes_one_label_so_spans_stop_breaking_inside_words():
    text = "Microsoft company"  # micro ##soft com ##pany, as the pipeline's docstring tells it
    rule = WordRule(
        piece_lengths=np.array([5, 6, 3, 6]), unk_id=None
    )  # "##soft" and "##pany" are longer than their text
    ids, offsets = np.arange(4), np.array([[0, 5], [5, 9], [10, 13], [13, 17]])
    labels = ("B-ENT", "I-NAME", "I-ENT")
    probabilities = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]] * 0.9 + 0.1 / 3
    spans = {
        strategy: [(span["label"], span["text"]) for span in Aggregation(strategy, labels, frozenset(), rule).read(
            text, ids, offsets, probabilities).spans]
        for strategy in STRATEGIES
    }  # fmt: skip
    assert spans["simple"] == [("ENT", "Micro"), ("NAME", "soft"), ("ENT", "company")]
    assert spans["first"] == [("ENT", "Microsoft company")]


def test_a_span_covers_the_words_whose_first_character_it_holds():
    text = " New York-based, 12"
    words = [(0, 4), (4, 9), (9, 15), (15, 16), (16, 19)]  # " New" " York" "-based" "," " 12", as offsets give them
    spans = [(1, 15, "LOC"), (15, 16, "PUNCT"), (18, 19, "NUMBER")]  # the last starts inside its word: no word's start
    assert on_words(spans, words, text) == [(0, 3, "LOC"), (3, 4, "PUNCT")]
    assert on_words([(0, 4, "ALL")], [(0, 1), (1, 2), (2, 4)], "a  b") == [(0, 2, "ALL")]  # a space alone is no word
    # SentencePiece's "▁" piece of its own takes its word's first character's offsets: the first span holding it wins
    assert on_words([(0, 1, "A"), (0, 8, "B")], [(0, 6), (7, 8)], "Аусура x") == [(0, 1, "A"), (1, 2, "B")]


def random_word_labels(count: int, rng: random.Random) -> list[str]:
    """A model's labels for `count` words: any of them, in any order (I- after O included, as models write them)."""
    return [rng.choice(WORD_LABELS) if rng.random() < 0.5 else "O" for _ in range(count)]


def test_entity_f1_on_words_is_seqevals_for_conll_gold_on_thousands_of_real_rows():
    rng = random.Random(41)
    gold_tags, found_tags, counts = [], [], EntityCounts()
    for text in real_texts():
        words = [(match.start(), match.end()) for match in re.finditer(r"\S+", text)]
        if not words:
            continue
        gold, found = ["O"] * len(words), random_word_labels(len(words), rng)
        for index, label in enumerate(random_word_labels(len(words), rng)):
            if label != "O":  # well-formed IOB2, as annotations are
                inside = index and gold[index - 1][2:] == label[2:] and rng.random() < 0.6
                gold[index] = f"{'I' if inside else 'B'}-{label[2:]}"
        _, gold_spans, gold_words = tag_spans([text[start:end] for start, end in words], gold, text, IOB2_TAGS, "row")
        starts, ends = [start for start, _ in words], [end for _, end in words]
        predicted = aggregate_spans(text, found, starts, ends, np.zeros(len(words)), frozenset({"O"}))
        predicted_spans = [(span["start"], span["end"], span["label"]) for span in predicted]
        counts.count_row(on_words(gold_spans, gold_words, text), on_words(predicted_spans, gold_words, text))
        gold_tags.append(gold)
        found_tags.append(found)
    ours = entity_scores(counts)
    theirs = classification_report(gold_tags, found_tags, output_dict=True, zero_division=0)  # conlleval's chunks
    assert sum(counts.gold.values()) > 5000
    for label in ("NUMBER", "CAPITALIZED", "CJK"):
        assert ours["per_label"][label]["f1"] == pytest.approx(theirs[label]["f1-score"])
        assert ours["per_label"][label]["support"] == theirs[label]["support"]
    for metric in ("precision", "recall", "f1"):
        name = f"{metric}-score" if metric == "f1" else metric
        assert ours["micro"][metric] == pytest.approx(theirs["micro avg"][name])
