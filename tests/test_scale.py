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
import torch
from transformers import AutoTokenizer

from stages import export, infer, load_checkpoint
from stages.core.params import load_params
from stages.model.directory import load_model_dir
from stages.scoring.reuse.plan import scoring_blocks
from stages.scoring.storage.parts import PART_SUFFIX, PartFiles, fingerprint
from tests.conftest import REPO
from tests.test_parity import edit_graph, perturb_one_weight

CPU_SERVED = {"runtime": "onnxruntime 1", "provider": "CPUExecutionProvider", "precision": "fp32", "cpu_kernels": "any"}


def prepared(make_workspace, rows: int = 40, context_heavy: bool = False, **infer_params):
    """A workspace exported and ready to score; `context_heavy`: weights that make each token's output depend
    strongly on the tokens around it (wide random weights, sharp attention), so a wrong window shows."""
    workspace = make_workspace("deberta-v2", rows=rows)
    if context_heavy:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for weight in workspace.model.parameters():
                if weight.dim() == 2:
                    weight.normal_(std=0.3, generator=generator)
        torch.save(workspace.model.state_dict(), workspace.root / "model.ckpt")
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
    metrics = json.loads(Path("metrics/infer_details.json").read_text())
    assert metrics["windows"] > metrics["rows"] and metrics["truncated_rows"] == metrics["cut_gold_spans"] == 0
    assert metrics["entities"]["micro"]["support"] > 0, "the rows have gold spans, none of them cut"


def test_sliding_window_probabilities_come_from_the_window_where_each_token_is_most_central(make_workspace):
    stride = 96  # windows every 30 tokens: most texts get several
    workspace = prepared(
        make_workspace, context_heavy=True, long_text="sliding_window", stride=stride, probabilities=True
    )
    infer.main()
    predictions = pd.read_parquet("out/predictions.parquet")
    texts = pd.read_parquet(workspace.params["infer"]["input"])["text"].fillna("")
    model, _ = load_model_dir(Path("models/model"))
    tokenizer = AutoTokenizer.from_pretrained("models/model")
    capacity = workspace.params["model"]["max_length"] - 2  # [CLS] content [SEP]
    checked = 0
    for text, row in zip(texts, predictions.itertuples(), strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= capacity:
            continue
        starts = [*range(0, len(ids) - capacity, capacity - stride), len(ids) - capacity]
        windows = []  # each window's probabilities, from torch on [CLS] + its tokens + [SEP]
        for start in starts:
            window = torch.tensor([[tokenizer.cls_token_id, *ids[start : start + capacity], tokenizer.sep_token_id]])
            with torch.inference_mode():
                windows.append(torch.softmax(model(window, torch.ones_like(window))[0, 1:-1], dim=-1).numpy())
        expected = []
        for position in range(len(ids)):
            covering = [k for k, start in enumerate(starts) if start <= position < start + capacity]
            best = max(covering, key=lambda k: (min(position - starts[k], starts[k] + capacity - 1 - position), -k))
            expected.append(windows[best][position - starts[best]])
        np.testing.assert_allclose(np.stack(row.probabilities.tolist()), np.stack(expected), atol=1e-4)
        checked += 1
    assert checked >= 3, "the dataset should have texts longer than one window"


def test_skip_policy_keeps_every_row_with_its_reason(make_workspace):
    prepared(make_workspace, bad_rows="skip")
    infer.main()
    predictions = pd.read_parquet("out/predictions.parquet")
    reasons = predictions["skipped_reason"].dropna()
    assert set(reasons) == {"control_chars", "empty", "null", "whitespace"}
    assert (predictions.loc[reasons.index, "n_tokens"] == 0).all()
    assert (predictions.drop(index=reasons.index)["n_tokens"] > 0).all()
    metrics = json.loads(Path("metrics/infer_details.json").read_text())
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


def part_files(parts: Path) -> dict[str, tuple[int, int]]:
    """Each finished part file with its inode and modification time."""
    return {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(parts.glob(f"part-*{PART_SUFFIX}"))
    }


@pytest.mark.slow  # SIGKILLs a run
def test_sigkill_then_rerun_reuses_finished_parts_and_gives_identical_predictions(make_workspace, monkeypatch):
    workspace = prepared(make_workspace, rows=400, block_rows=8, batch_size=2, reuse=False)  # parts alone resume
    assert run_infer(workspace.root).wait(timeout=600) == 0
    reference = Path("out/predictions.parquet").read_bytes()
    blocks = json.loads(Path("metrics/infer_details.json").read_text())["blocks"]
    Path("out/predictions.parquet").unlink()
    process = run_infer(workspace.root)
    parts = Path("out/predictions.parquet.parts")
    deadline = time.monotonic() + 300
    while len(part_files(parts)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = part_files(parts)
    assert 3 <= len(finished) < blocks and blocks >= 30, "the kill should land mid-run"
    assert not Path("out/predictions.parquet").exists()
    monkeypatch.setattr(PartFiles, "remove", lambda self: None)  # keep the parts to inspect them after the rerun
    infer.main()
    assert Path("out/predictions.parquet").read_bytes() == reference
    after = part_files(parts)
    assert {name: after[name] for name in finished} == finished, "finished parts must be reused untouched"
    metrics = json.loads(Path("metrics/infer_details.json").read_text())
    assert (metrics["blocks"], metrics["resumed_blocks"], metrics["rows"]) == (blocks, len(finished), 404)
    sizes = [len(block.texts) for block in scoring_blocks(load_params())]
    resumed = sum(sizes[int(name[len("part-") : -len(PART_SUFFIX)])] for name in finished)
    assert metrics["resumed_rows"] == resumed  # texts/s and tokens/s count only the rows scored now


def test_the_fingerprint_follows_what_changes_the_outputs(make_workspace):
    workspace = prepared(make_workspace)
    original = fingerprint(load_params(), CPU_SERVED)
    neutral = {
        "output": "elsewhere/predictions.parquet",
        "metrics": "elsewhere/infer.json",
        "details": "elsewhere/infer_details.json",
        "engine": "ray",
        "ray_actors": 3,
        "ray_max_actors": 4,
        "ray_cpus_per_actor": 0.5,
        "ray_tokenizers": 2,
        "ray_cpus_per_tokenizer": 0.5,
        "ray_queue_mb": 64,
    }
    before = {key: workspace.params["infer"][key] for key in neutral}
    for key, value in neutral.items():
        workspace.write_params(infer={key: value})
        assert fingerprint(load_params(), CPU_SERVED) == original, f"{key} does not change the outputs"
    workspace.write_params(infer=before)
    changes = {
        "infer.long_text": lambda: workspace.write_params(infer={"long_text": "truncate"}),
        "infer.stride": lambda: workspace.write_params(infer={"stride": 7}),
        "model.max_length": lambda: (
            workspace.write_params(model={"max_length": 64}),
            load_checkpoint.main(),
            export.main(),
        ),
        "the ONNX model": lambda: edit_graph(perturb_one_weight),  # same size, other weights
        "the input file": lambda: pd.read_parquet("data.parquet").iloc[:-1].to_parquet("data.parquet"),
    }
    served = {**CPU_SERVED, "provider": "CUDAExecutionProvider"}  # what actually serves, not what is configured
    assert fingerprint(load_params(), served) != fingerprint(load_params(), CPU_SERVED)
    seen = {original}
    for name, change in changes.items():
        change()
        key = fingerprint(load_params(), CPU_SERVED)
        assert key not in seen, f"changing {name} must change the fingerprint"
        seen.add(key)


def test_changed_params_discard_old_parts(make_workspace):
    workspace = prepared(make_workspace, rows=40, block_rows=8)
    parts = Path("out/predictions.parquet.parts")
    parts.mkdir(parents=True)
    (parts / "manifest.json").write_text(json.dumps({"fingerprint": "another run"}))
    (parts / f"part-000000{PART_SUFFIX}").write_bytes(b"stale")
    infer.main()
    assert pq.read_table("out/predictions.parquet").num_rows == 44
    assert workspace.root.joinpath("out").is_dir() and not parts.exists()
    assert json.loads(Path("metrics/infer_details.json").read_text())["resumed_blocks"] == 0
