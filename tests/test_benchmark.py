"""The serving benchmark runs end to end on a tiny model and writes well-formed metrics (timings are never asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from stages import benchmark, load_checkpoint
from stages.core.cpu import has_native_bf16, has_vnni
from stages.core.errors import UserError
from stages.core.params import load_params

ROW_KEYS = {
    "variant",
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


@pytest.mark.parametrize("family", ["deberta-v2", pytest.param("modernbert", marks=pytest.mark.slow)])
def test_benchmark_on_the_workspace_model_writes_metrics_and_plots(make_workspace, capsys, family):
    workspace = make_workspace(family)
    workspace.write_params(
        benchmark={"metrics": "out/benchmark.json", "report": "out/report.json", "plots": "out/benchmark_plots.json"}
    )
    load_checkpoint.main()
    benchmark.main(["--rows", "16", "--batch", "4", "--length", "64", "--rounds", "1", "--warmup", "0"])
    report = json.loads(Path("out/report.json").read_text(encoding="utf-8"))
    rows = {row["variant"]: row for row in report["variants"]}
    summary = json.loads(Path("out/benchmark.json").read_text(encoding="utf-8"))
    assert summary == {name: row["texts_per_s"] for name, row in rows.items()}
    skipped = {item["variant"]: item["reason"] for item in report["skipped"]}
    cpu_engines = {"torch-fp32", "ort-fp32", "ort-int8", "ort-int8-vnni" if not has_vnni() else "ort-int8-no-vnni"}
    assert cpu_engines <= set(rows)
    assert ("torch-bf16" in rows) == has_native_bf16() and ("torch-bf16" in skipped) != has_native_bf16()
    assert ("torch_bf16" in report["peaks"]) == has_native_bf16()  # no minutes of emulated bf16 matmuls
    for name in cpu_engines:
        row = rows[name]
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert (row["threads"], row["batch"], row["length"]) == (1, 4, 64)  # runtime.intra_op_num_threads 1
        assert row["texts_per_s"] > 0 and row["peak_gflop_per_s"] > 0
    # The workspace model is trained: labels win by wide margins, so every variant gives torch's labels.
    assert rows["ort-fp32"]["label_agreement"] >= 0.999
    int8_floor = load_params().parity.int8.min_label_agreement
    assert rows["ort-int8"]["label_agreement"] >= int8_floor
    assert rows["ort-int8"]["precision"].endswith("7-bit weights (reduce_range)") != has_vnni()
    assert report["settings"]["texts"] == 16 and report["settings"]["batches"] == 4
    if importlib.util.find_spec("openvino") is None:  # the peer runtime, on our own exports
        assert os.environ.get("CI") != "true", "the test extra installs openvino"
        assert "pip install -e '.[openvino]'" in skipped["openvino"], skipped
    else:
        assert {"openvino-f32", "openvino-int8"} <= set(rows), skipped
        assert rows["openvino-f32"]["label_agreement"] >= 0.999
        assert rows["openvino-int8"]["label_agreement"] >= int8_floor
    if not torch.cuda.is_available():
        assert {"torch-fp16-cuda", "ort-fp16-cuda", "ort-fp32-cuda"} <= set(skipped)
    plots = json.loads(Path("out/benchmark_plots.json").read_text(encoding="utf-8"))
    assert [point["variant"] for point in plots] == list(rows)
    table = capsys.readouterr().out
    assert all(name in table for name in cpu_engines) and "matmul peak" in table


def test_demo_size_without_the_normalised_model_says_to_run_the_pipeline(make_workspace):
    workspace = make_workspace("deberta-v2")
    workspace.write_params(benchmark={"metrics": "out/benchmark.json"})
    with pytest.raises(UserError, match="dvc repro"):
        benchmark.main(["--rows", "4"])
    assert not Path("out/benchmark.json").exists()
