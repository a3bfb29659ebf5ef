"""Dataset-scale scoring: long texts, bad rows, spans, token budgets, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from stages import export, infer, load_checkpoint
from tests.conftest import REPO


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
    workspace = prepared(make_workspace, rows=400, block_rows=8, batch_size=2)
    assert run_infer(workspace.root).wait(timeout=600) == 0
    reference = Path("out/predictions.parquet").read_bytes()
    Path("out/predictions.parquet").unlink()
    process = run_infer(workspace.root)
    parts = Path("out/predictions.parquet.parts")
    deadline = time.monotonic() + 300
    while len(list(parts.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(parts.glob("part-*.parquet")))
    assert 3 <= finished < 51, "the kill should land mid-run"
    assert not Path("out/predictions.parquet").exists()
    assert run_infer(workspace.root).wait(timeout=600) == 0
    assert Path("out/predictions.parquet").read_bytes() == reference
    assert not parts.exists()
    assert json.loads(Path("metrics/infer.json").read_text())["rows"] == 404


def test_changed_params_discard_old_parts(make_workspace):
    workspace = prepared(make_workspace, rows=40, block_rows=8)
    parts = Path("out/predictions.parquet.parts")
    parts.mkdir(parents=True)
    (parts / "manifest.json").write_text(json.dumps({"fingerprint": "another run"}))
    (parts / "part-000000.parquet").write_bytes(b"stale")
    infer.main()
    assert pq.read_table("out/predictions.parquet").num_rows == 44
    assert workspace.root.joinpath("out").is_dir() and not parts.exists()
