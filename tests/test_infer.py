"""Scoring: order and ids kept, offsets inside the text, any graph's inputs fed, every input format."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stages import export, infer, load_checkpoint, parity
from stages.core.errors import UserError
from tests.backbones import piece_rule_accuracy
from tests.conftest import REPO

CPU_INFO = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").is_file() else ""

METRIC_KEYS = {
    "rows",
    "tokens",
    "padding_ratio",
    "seconds",
    "texts_per_s",
    "tokens_per_s",
    "provider",
    "threads",
    "peak_rss_mb",
}


def scored(make_workspace, kind: str = "deberta-v2", **export_params):
    """Load, export and score the workspace's dataset; the model was taught a label per token piece."""
    workspace = make_workspace(kind)
    workspace.write_params(export=export_params)
    load_checkpoint.main()
    export.main()
    infer.main()
    return workspace, pd.read_parquet(workspace.params["infer"]["output"])


@pytest.mark.parametrize(
    ("kind", "export_params"),
    [("deberta-v2", {"input_dtype": "int32", "exporter": "dynamo", "opset": 18}), ("bert", {}), ("distilbert", {})],
)
def test_predictions_are_aligned_with_the_input_rows(make_workspace, kind, export_params):
    workspace, predictions = scored(make_workspace, kind, **export_params)
    source = pd.read_parquet(workspace.params["infer"]["input"])
    assert predictions["id"].tolist() == source["id"].tolist()
    for text, row in zip(source["text"], predictions.itertuples(), strict=True):
        text = text or ""
        assert row.n_tokens == len(row.label_ids) == len(row.labels) == len(row.starts) == len(row.ends)
        assert all(0 <= start <= end <= len(text) for start, end in zip(row.starts, row.ends, strict=True))
    empty = predictions.set_index("id").loc[source["id"][source["text"].fillna("") == ""]]
    assert (empty["n_tokens"] == 0).all()
    metrics = json.loads(Path("metrics/infer_details.json").read_text())
    assert set(metrics) >= METRIC_KEYS and metrics["rows"] == len(source) and metrics["text_issues"]["null"] == 1
    assert metrics["provider"] == "CPUExecutionProvider"
    if "cpu family" in CPU_INFO:  # x86 Linux: the generation is named, not only the flags
        assert re.fullmatch(r".+, family \d+ model \d+ \(.*\)", metrics["cpu"]), metrics["cpu"]
    assert (
        piece_rule_accuracy(source, predictions) >= 0.99
    )  # each token's label is its own piece's: rows stayed aligned


def test_truncated_texts_keep_their_end_and_their_cut_gold_spans_count_as_misses(make_workspace, caplog):
    workspace = make_workspace()
    workspace.write_params(infer={"long_text": "truncate"})  # as the seed notes do; the default scores every token
    load_checkpoint.main()
    export.main()
    with caplog.at_level(logging.INFO):
        infer.main()
    predictions = pd.read_parquet(workspace.params["infer"]["output"])
    long_rows = predictions[predictions["truncated"]]
    assert len(long_rows) > 0 and (long_rows["n_tokens"] == 128 - 2).all()
    source = pd.read_parquet(workspace.params["infer"]["input"]).set_index("id")
    for row in long_rows.itertuples():
        assert row.ends[-1] >= len(source["text"][row.id].rstrip()) - 1  # the end of the text is kept
        assert row.starts[0] > 0
    cut = sum(
        1
        for row in long_rows.itertuples()
        for span in source["entities"][row.id]
        if span["start"] < row.starts[0] or span["end"] > row.ends[-1]
    )
    metrics = json.loads(Path(workspace.params["infer"]["details"]).read_text())
    assert metrics["truncated_rows"] == len(long_rows) and metrics["cut_gold_spans"] == cut > 0, metrics
    entities = metrics["entities"]["micro"]
    assert entities["support"] == sum(len(spans) for spans in source["entities"]), "every gold span counts"
    assert round(entities["recall"] * entities["support"]) <= entities["support"] - cut, "a cut span is never found"
    assert f"({cut} gold spans in the cut text of {len(long_rows)} truncated rows count as misses)" in caplog.text


def test_csv_and_jsonl_inputs_give_the_same_predictions_and_scores(make_workspace):
    workspace, predictions = scored(make_workspace)
    first = json.loads(Path("metrics/infer.json").read_text())
    source = pd.read_parquet(workspace.params["infer"]["input"])
    source.assign(entities=source.entities.map(lambda spans: json.dumps(spans.tolist()))).to_csv(
        "data.csv", index=False
    )
    source.to_json("data.jsonl", orient="records", lines=True, force_ascii=False)
    for path in ("data.csv", "data.jsonl"):
        workspace.write_params(infer={"input": path, "output": f"out/{path}.parquet"})
        infer.main()
        other = pd.read_parquet(f"out/{path}.parquet")
        assert other["label_ids"].map(list).tolist() == predictions["label_ids"].map(list).tolist(), path
        assert json.loads(Path("metrics/infer.json").read_text())["entity_f1"] == first["entity_f1"], path


def test_word_level_aggregation_adds_words_and_the_gate_reads_spans_as_infer_does(make_workspace):
    workspace = make_workspace()
    workspace.write_params(infer={"aggregation": "first"}, parity={"samples": 100})  # the gate takes every row
    load_checkpoint.main()
    export.main()
    parity.main()
    infer.main()
    predictions = pd.read_parquet(workspace.params["infer"]["output"])
    assert predictions["word_starts"].map(len).sum() > 0
    for row in predictions.itertuples():
        assert len(row.word_starts) == len(row.word_ends) == len(row.word_labels) <= row.n_tokens
        assert set(row.word_starts) <= set(row.starts) and set(row.word_ends) <= set(row.ends)
        assert all(span["start"] in row.word_starts and span["end"] in row.word_ends for span in row.spans), row.id
    details = json.loads(Path("metrics/infer_details.json").read_text())
    assert details["entity_level"] == "word" and details["aggregation"] == "first"
    assert json.loads(Path("metrics/infer.json").read_text())["entity_level"] == "word"
    gate = json.loads(Path("metrics/parity.json").read_text())
    assert gate["entity_f1_onnx"] == pytest.approx(details["entity_f1"], abs=1e-5)  # same rows, read alike


def test_invalid_utf8_in_csv_is_scored_and_counted(make_workspace):
    workspace = make_workspace()
    Path("bad.csv").write_bytes(b"id,text\n1,caf\xe9 ok\n2,fine text\n3,\n")
    workspace.write_params(infer={"input": "bad.csv"})
    load_checkpoint.main()
    export.main()
    infer.main()
    metrics = json.loads(Path("metrics/infer_details.json").read_text())
    assert metrics["rows"] == 3 and metrics["text_issues"] == {"invalid_utf8": 1, "null": 1} and metrics["skipped"] == 0
    assert pq.read_table("out/predictions.parquet").column("id").to_pylist() == ["1", "2", "3"]


def test_dataset_without_the_text_column_names_its_columns(make_workspace):
    workspace = make_workspace()
    pd.DataFrame({"id": [1], "body": ["x"]}).to_parquet("other.parquet")
    workspace.write_params(infer={"input": "other.parquet"})
    load_checkpoint.main()
    export.main()
    with pytest.raises(UserError, match=r"no column 'text' \(infer\.text_column\); its columns are: id, body"):
        infer.main()
    assert not Path("out/predictions.parquet").exists()


def test_scoring_imports_neither_torch_nor_transformers_nor_onnx(make_workspace):
    workspace, _ = scored(make_workspace)
    probe = (  # onnx is 0.9 s of imports: a rerun that scores a few new rows pays it for nothing
        "import sys; from stages import infer; infer.main(); "
        "print(sorted(name for name in ('torch', 'transformers', 'onnx') if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=workspace.root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
