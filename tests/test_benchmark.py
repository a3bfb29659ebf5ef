"""The serving benchmark runs end to end on a tiny model and writes well-formed metrics (timings are never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stages import benchmark, load_checkpoint
from stages.core.errors import UserError

CPU_ENGINES = ("torch-fp32", "torch-bf16", "ort-fp32", "ort-int8")
ROW_KEYS = {
    "engine",
    "precision",
    "provider",
    "threads",
    "batch",
    "length",
    "versions",
    "machine",
    "texts_per_s",
    "tokens_per_s",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "vs_torch_fp32",
    "label_agreement",
    "mflop_per_token",
    "achieved_gflop_per_s",
    "peak_gflop_per_s",
    "fraction_of_peak",
    "peak_rss_mb",
}


def test_benchmark_on_the_workspace_model_writes_metrics_and_plots(make_workspace, capsys):
    make_workspace("deberta-v2")
    load_checkpoint.main()
    benchmark.main(
        [
            *("--rows", "8", "--batch", "4", "--length", "64", "--rounds", "1", "--warmup", "0", "--threads", "1"),
            *("--metrics", "out/benchmark.json", "--plots", "out/benchmark_plots.json"),
        ]
    )
    report = json.loads(Path("out/benchmark.json").read_text(encoding="utf-8"))
    rows = {row["engine"]: row for row in report["engines"]}
    assert set(CPU_ENGINES) <= set(rows)
    for name in CPU_ENGINES:
        row = rows[name]
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert (row["threads"], row["batch"], row["length"]) == (1, 4, 64)
        assert {"torch", "transformers"} <= set(row["versions"]) and any(
            n.startswith("onnxruntime") for n in row["versions"]
        )
        assert row["machine"]["cores"] >= 1 and row["machine"]["cpu"]
        assert row["texts_per_s"] > 0 and row["tokens_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["latency_p50_ms"] <= row["latency_p90_ms"] <= row["latency_p99_ms"]
        assert 0.0 <= row["label_agreement"] <= 1.0
        assert row["mflop_per_token"] > 0 and row["peak_gflop_per_s"] > 0 and row["fraction_of_peak"] > 0
    assert rows["torch-fp32"]["vs_torch_fp32"] == 1.0 and rows["torch-fp32"]["label_agreement"] == 1.0
    assert rows["ort-fp32"]["provider"] == "CPUExecutionProvider"
    for kind in ("onnxruntime_fp32", "torch_fp32", "torch_bf16"):
        assert report["peaks"][kind]["gflop_per_s"] > 0
    assert report["settings"]["texts"] == 8 and report["settings"]["batches"] == 2
    if not torch.cuda.is_available():
        assert {item["engine"] for item in report["skipped"]} == {"torch-fp16-cuda", "ort-fp16-cuda", "ort-fp32-cuda"}
    plots = json.loads(Path("out/benchmark_plots.json").read_text(encoding="utf-8"))
    assert plots == [{"engine": row["engine"], "texts_per_s": row["texts_per_s"]} for row in report["engines"]]
    table = capsys.readouterr().out
    assert all(name in table for name in CPU_ENGINES) and "matmul peak" in table


def test_demo_size_without_the_normalised_model_says_to_run_the_pipeline(make_workspace):
    make_workspace("deberta-v2")
    with pytest.raises(UserError, match="dvc repro"):
        benchmark.main(["--rows", "4", "--metrics", "out/benchmark.json"])
    assert not Path("out/benchmark.json").exists()
