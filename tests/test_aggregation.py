"""Word-level aggregation against transformers' own pipeline, on models trained on first sub-word labels with a
SentencePiece, a WordPiece and a byte-level BPE tokenizer: for each `infer.aggregation`, `infer`'s spans on the
2,000 real rows of tests/data are `pipeline("token-classification", aggregation_strategy=...)`'s on the same torch
model, and under the word-level strategies its entity precision, recall and F1 are seqeval's over the gold's words
(CoNLL-style words and IOB2 tags), each word tagged by the pipeline's span holding its first character."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from transformers import TokenClassificationPipeline, pipeline
from transformers.pipelines.token_classification import AggregationStrategy

from stages import export, infer, load_checkpoint
from tests.conftest import write_workspace
from tests.first_subword import BACKBONES, WORD_LABELS, word_tags, write_first_subword
from tools.generate.real_text import REAL_TEXT

STRATEGIES = ("simple", "first", "average", "max")
TYPES = ("NUMBER", "CAPITALIZED", "CJK")


def conll_rows() -> pd.DataFrame:
    """The real rows with CoNLL-style gold: their words (runs of non-space characters) and IOB2 tags."""
    frame = pq.read_table(REAL_TEXT, columns=["id", "text"]).to_pandas()
    tagged = [word_tags(text) for text in frame["text"]]
    frame["tokens"] = [
        [text[start:end] for start, end, _ in words] for text, words in zip(frame["text"], tagged, strict=True)
    ]
    frame["ner_tags"] = [[tag for _, _, tag in words] for words in tagged]
    return frame


def pipeline_tags(frame: pd.DataFrame, spans: list[list[dict]]) -> tuple[list, list]:
    """Gold and predicted IOB2 tags of each row's words: a word takes the type of the pipeline's span holding its first
    character, `B-` where the span starts there. The gold keeps a truncated row's entities in the cut text, which
    the pipeline cannot find: misses, as infer counts them."""
    gold_rows, found_rows = [], []
    for text, row_spans in zip(frame["text"], spans, strict=True):
        words = word_tags(text)
        found, previous = [], None
        for start, _, _ in words:
            holder = next((span for span in row_spans if span["start"] <= start < span["end"]), None)
            found.append("O" if holder is None else f"{'I' if holder is previous else 'B'}-{holder['entity_group']}")
            previous = holder
        gold_rows.append([tag for _, _, tag in words])
        found_rows.append(found)
    return gold_rows, found_rows


def pipeline_readings(reference: TokenClassificationPipeline, texts: pd.Series) -> Callable[[str], list[list[dict]]]:
    """Each text's entities under a strategy, as `reference(text, aggregation_strategy=strategy)` gives them: its own
    preprocess, forward and postprocess (what its `__call__` runs for one text), the forward run once for every
    strategy (the strategy is a postprocess parameter alone)."""
    outputs = [
        [reference.forward(inputs) for inputs in reference.preprocess(text, is_split_into_words=False)]
        for text in texts
    ]

    def read(strategy: str) -> list[list[dict]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Tokenizer does not support real words, using fallback heuristic"
            aggregation = AggregationStrategy[strategy.upper()]
            return [reference.postprocess(output, aggregation_strategy=aggregation) for output in outputs]

    return read


@pytest.fixture
def one_torch_thread():
    """torch on one thread while the pipeline runs (two test workers share two cores), as it was after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow  # three models trained, exported, and 1,000 rows scored and read by the pipeline four times each
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_spans_are_the_pipelines_and_word_f1_is_seqevals(tmp_path, monkeypatch, one_torch_thread, backbone):
    monkeypatch.chdir(tmp_path)
    frame = conll_rows().iloc[::2]  # every other real row: each script and length the file holds, half the time
    workspace = write_workspace(
        tmp_path, write_first_subword(tmp_path / "backbone", BACKBONES[backbone]), WORD_LABELS, frame
    )
    load_checkpoint.main()
    export.main()
    read = pipeline_readings(pipeline("token-classification", model="models/model", device="cpu"), frame["text"])
    for strategy in STRATEGIES:
        settings = {
            "aggregation": strategy,
            "output": f"out/{strategy}.parquet",
            "reuse": False,
            "block_rows": 1000,
            "long_text": "truncate",  # as the pipeline reads a long text: its first window alone
        }
        workspace.write_params(infer={**settings, "batch_size": 64})
        infer.main()
        ours = pd.read_parquet(f"out/{strategy}.parquet")
        theirs = read(strategy)
        differing = [
            (row.id, mine, pipelines)
            for row, pipelines in zip(ours.itertuples(), theirs, strict=True)
            if (mine := [(span["label"], span["start"], span["end"]) for span in row.spans])
            != [(span["entity_group"], span["start"], span["end"]) for span in pipelines]
        ]
        assert not differing, f"{strategy}: {len(differing)} rows differ, the first: {differing[0]}"
        metrics = json.loads(Path("metrics/infer_details.json").read_text())
        assert metrics["entity_level"] == ("token" if strategy == "simple" else "word")
        if strategy == "simple":
            continue
        gold, found = pipeline_tags(frame, theirs)
        seqeval = classification_report(gold, found, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
        for label in TYPES:
            for metric in ("precision", "recall", "f1"):
                name = f"{metric}-score" if metric == "f1" else metric
                assert metrics["entities"]["per_label"][label][metric] == pytest.approx(seqeval[label][name], abs=1e-5)
        assert metrics["entity_f1"] == pytest.approx(seqeval["micro avg"]["f1-score"], abs=1e-5), strategy
        print(f"{backbone} {strategy}: entity F1 on words {metrics['entity_f1']:.4f} = seqeval's")
