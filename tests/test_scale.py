"""Dataset-scale scoring: long texts, bad rows, spans, token budgets, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from stages import export, infer, load_checkpoint
from stages.encoding import EncodedText, Framing, make_windows, most_central_window, plan_batches, window_spans
from stages.spans import aggregate_spans
from tests.conftest import REPO

FRAMING = Framing(prefix=np.array([1]), suffix=np.array([2]), max_length=10, truncation_side="left")


@pytest.mark.parametrize("tokens", [0, 1, 8, 9, 20, 57])
@pytest.mark.parametrize("stride", [0, 3, 7])
def test_sliding_windows_cover_every_token_and_pick_the_most_central(tokens, stride):
    spans = window_spans(tokens, FRAMING, "sliding_window", stride)
    assert all(length <= FRAMING.capacity for _, length in spans)
    text = EncodedText(input_ids=np.arange(tokens), offsets=np.zeros((tokens, 2), dtype=np.int32))
    windows = make_windows([text], FRAMING, "sliding_window", stride)
    choice = most_central_window(tokens, windows)
    assert (choice >= 0).all()
    for position, index in enumerate(choice):
        window = windows[index]
        margin = min(position - window.start, window.start + window.length - 1 - position)
        others = [
            min(position - w.start, w.start + w.length - 1 - position)
            for w in windows
            if w.start <= position < w.start + w.length
        ]
        assert margin == max(others)
    for window in windows:
        assert window.input_ids[0] == 1 and window.input_ids[-1] == 2
        assert (window.input_ids[1:-1] == np.arange(window.start, window.start + window.length)).all()


def test_truncation_keeps_the_side_the_tokenizer_says():
    assert window_spans(20, FRAMING, "truncate", 0) == [(12, 8)]
    right = Framing(FRAMING.prefix, FRAMING.suffix, 10, "right")
    assert window_spans(20, right, "truncate", 0) == [(0, 8)]


def test_batches_respect_rows_and_token_budget():
    lengths = [5, 100, 3, 50, 50, 7, 100, 1]
    batches = list(plan_batches(lengths, max_rows=3, max_tokens=200))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 200)


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


def prepared(make_workspace, rows: int = 40, **infer_params):
    workspace = make_workspace("deberta-v2", rows=rows)
    workspace.write_params(infer=infer_params)
    load_checkpoint.main()
    export.main()
    return workspace


def test_sliding_window_scores_every_token_of_long_texts(make_workspace):
    workspace = prepared(make_workspace, long_text="sliding_window", stride=16, probabilities=True)
    infer.main()
    predictions = pd.read_parquet("out/predictions.parquet")
    texts = pd.read_parquet(workspace.params["infer"]["input"])["text"].fillna("")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained("models/onnx")
    for text, row in zip(texts, predictions.itertuples(), strict=True):
        assert not row.truncated
        assert row.n_tokens == len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert len(row.probabilities) == row.n_tokens
        assert all(abs(sum(p) - 1) < 1e-4 for p in row.probabilities)
    metrics = json.loads(Path("metrics/infer.json").read_text())
    assert metrics["windows"] > metrics["rows"] and metrics["truncated_rows"] == 0


def test_skip_policy_keeps_every_row_with_its_reason(make_workspace):
    prepared(make_workspace, bad_rows="skip")
    infer.main()
    predictions = pd.read_parquet("out/predictions.parquet")
    reasons = predictions["skipped_reason"].dropna()
    assert set(reasons) == {"control_chars", "empty", "null", "whitespace"}
    assert (predictions.loc[reasons.index, "n_tokens"] == 0).all()
    assert (predictions.drop(index=reasons.index)["n_tokens"] > 0).all()
    metrics = json.loads(Path("metrics/infer.json").read_text())
    assert metrics["skipped"] == len(reasons) == sum(metrics["text_issues"].values())
    assert metrics["rows"] == len(predictions) == 44


def test_spans_are_text_slices(make_workspace):
    workspace = prepared(make_workspace, span_ignore_labels=[])
    infer.main()
    predictions = pd.read_parquet("out/predictions.parquet")
    texts = pd.read_parquet(workspace.params["infer"]["input"])["text"].fillna("")
    for text, row in zip(texts, predictions.itertuples(), strict=True):
        assert sum(1 for _ in row.spans) <= row.n_tokens
        for span in row.spans:
            assert span["text"] == text[span["start"] : span["end"]] and 0 <= span["score"] <= 1


def run_infer(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "stages.infer"], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_sigkill_then_rerun_gives_identical_predictions(make_workspace):
    workspace = prepared(make_workspace, rows=400, window_rows=8, batch_size=2)
    assert run_infer(workspace.root).wait(timeout=600) == 0
    reference = Path("out/predictions.parquet").read_bytes()
    Path("out/predictions.parquet").unlink()
    process = run_infer(workspace.root)
    parts = Path("out/predictions.parquet.parts")
    deadline = time.monotonic() + 300
    while len(list(parts.glob("shard-*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(parts.glob("shard-*.parquet")))
    assert 3 <= finished < 51, "the kill should land mid-run"
    assert not Path("out/predictions.parquet").exists()
    assert run_infer(workspace.root).wait(timeout=600) == 0
    assert Path("out/predictions.parquet").read_bytes() == reference
    assert not parts.exists()
    assert json.loads(Path("metrics/infer.json").read_text())["rows"] == 404


def test_changed_params_discard_old_shards(make_workspace):
    workspace = prepared(make_workspace, rows=40, window_rows=8)
    parts = Path("out/predictions.parquet.parts")
    parts.mkdir(parents=True)
    (parts / "manifest.json").write_text(json.dumps({"fingerprint": "another run"}))
    (parts / "shard-000000.parquet").write_bytes(b"stale")
    infer.main()
    assert pq.read_table("out/predictions.parquet").num_rows == 44
    assert workspace.root.joinpath("out").is_dir() and not parts.exists()
