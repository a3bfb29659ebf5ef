"""`runtime.backend: openvino`: the same exported model served by OpenVINO through `parity` and `infer`."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from stages import export, infer, load_checkpoint, parity
from stages.bench import choice
from stages.core.errors import UserError
from stages.graph.runners import openvino_precisions
from tests.conftest import unavailable


def scored(workspace, backend: str) -> tuple[dict, dict, pd.DataFrame]:
    """Parity's report, infer's details and the predictions with `backend` serving."""
    workspace.write_params(
        runtime={"backend": backend},
        infer={"output": f"out/{backend}.parquet", "details": f"metrics/{backend}.json", "reuse": False},
    )
    parity.main()
    infer.main()
    report = json.loads(Path(workspace.params["parity"]["report"]).read_text())
    details = json.loads(Path(f"metrics/{backend}.json").read_text())
    assert details["verified"], details["verification"]  # the verdict binds what served, OpenVINO included
    return report, details, pd.read_parquet(f"out/{backend}.parquet")


def spans(rows: pd.DataFrame) -> list[list[tuple]]:
    return [[(span["label"], span["start"], span["end"]) for span in row] for row in rows["spans"]]


def test_openvino_passes_the_gate_and_scores_onnxruntimes_labels(make_workspace):
    needs_openvino()
    workspace = make_workspace("deberta-v2")
    workspace.write_params(runtime={"openvino_precision": "f32"})
    load_checkpoint.main()
    export.main()
    ort_report, ort_details, ort_rows = scored(workspace, "onnxruntime")
    report, details, rows = scored(workspace, "openvino")
    assert report["passed"] and report["provider"].startswith("OpenVINO ") and report["provider"].endswith(" CPU f32")
    assert details["provider"] == report["provider"] and ort_details["provider"] == "CPUExecutionProvider"
    assert rows["id"].tolist() == ort_rows["id"].tolist()
    assert rows["labels"].map(list).tolist() == ort_rows["labels"].map(list).tolist()
    assert spans(rows) == spans(ort_rows)  # their scores differ in the last bits
    assert details["label_counts"] == ort_details["label_counts"]
    assert len(list(Path(workspace.params["runtime"]["openvino_cache"]).glob("*/*/.ready"))) == 1  # infer loaded it
    print(f"openvino: parity max abs diff {report['max_abs_diff']:.2e} (onnxruntime {ort_report['max_abs_diff']:.2e})")


def test_openvino_missing_names_the_install(make_workspace, monkeypatch):
    workspace = make_workspace()
    load_checkpoint.main()
    export.main()
    workspace.write_params(runtime={"backend": "openvino"})
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if it were not installed
    with pytest.raises(UserError, match=r"runtime\.backend = openvino but openvino is not installed: pip install"):
        infer.main()


def needs_openvino() -> None:
    if importlib.util.find_spec("openvino") is None:
        unavailable("openvino is not installed (pip install -e '.[test]' installs it)")


@pytest.mark.parametrize("faster", ["openvino", pytest.param("onnxruntime", marks=pytest.mark.slow)])
def test_auto_serves_what_the_export_measured_faster(make_workspace, monkeypatch, faster):
    needs_openvino()
    workspace = make_workspace("deberta-v2")
    workspace.write_params(runtime={"backend": "auto"})
    load_checkpoint.main()

    def faked(runners: dict, batches: list) -> dict[str, float]:  # the faster one takes a second, the other two
        assert len(runners) == 2 and batches, runners
        return {name: 1.0 if name.startswith(faster) else 2.0 for name in runners}

    monkeypatch.setattr(choice, "time_runs", faked)
    export.main()
    serving = json.loads(Path("metrics/export.json").read_text())["serving"]  # the choice with its evidence
    assert serving["backend"] == faster and serving["cpu"] and len(serving["measured_texts_per_s"]) == 2, serving
    chosen = json.loads(Path("models/onnx/model.json").read_text())["serving"]  # the choice alone
    assert chosen == {key: serving[key] for key in ("backend", "precision", "cpu")}, chosen
    report, details, _ = scored(workspace, "auto")
    assert report["passed"] and report["provider"] == details["provider"] == serving["provider"], (report, serving)
    assert report["provider"].startswith("OpenVINO ") == (faster == "openvino")
    assert report["precision"] == serving["precision"]


@pytest.mark.slow
def test_a_close_measurement_keeps_onnxruntime(make_workspace, monkeypatch):
    needs_openvino()
    workspace = make_workspace("deberta-v2")
    workspace.write_params(runtime={"backend": "auto"})
    load_checkpoint.main()
    monkeypatch.setattr(
        choice, "time_runs", lambda runners, batches: {name: 1.0 if "openvino" in name else 1.03 for name in runners}
    )
    export.main()
    assert json.loads(Path("models/onnx/model.json").read_text())["serving"]["backend"] == "onnxruntime"


@pytest.mark.parametrize("family", ["deberta-v2", pytest.param("bert", marks=pytest.mark.slow)])
def test_auto_leaves_out_a_runtime_that_fails_the_gate_however_fast(make_workspace, monkeypatch, family):
    """auto never picks what parity would refuse: OpenVINO, measured 9x faster, fails a gate that demands bit
    equality with torch, so onnxruntime serves and model.json says why OpenVINO does not."""
    needs_openvino()
    workspace = make_workspace(family)
    exact = {"atol": 1e-12, "rtol": 0.0, "min_label_agreement": 1.0, "max_f1_drop": 0.0}  # fp32's keys
    workspace.write_params(runtime={"backend": "auto"}, parity={**exact, "bf16": {**exact, "outlier_share": 0.0}})
    load_checkpoint.main()
    monkeypatch.setattr(
        choice, "time_runs", lambda runners, batches: {name: 1.0 if "openvino" in name else 9.0 for name in runners}
    )
    export.main()
    serving = json.loads(Path("metrics/export.json").read_text())["serving"]
    assert serving["backend"] == "onnxruntime" and list(serving["measured_texts_per_s"]) == ["onnxruntime fp32"]
    assert re.match(r"fails the parity gate at (bf16|fp32): .*atol", serving["left_out"]["openvino"]), serving


def test_openvino_serves_fp32_at_bf16_where_the_cpu_has_it_and_the_gate_judges_bf16(make_workspace):
    needs_openvino()
    workspace = make_workspace("deberta-v2")
    load_checkpoint.main()
    export.main()
    report, _, _ = scored(workspace, "openvino")  # openvino_precision: auto
    bf16 = "BF16" in openvino_precisions()
    assert report["passed"] and report["precision"] == ("bf16" if bf16 else "fp32"), report
    assert report["provider"].endswith(" CPU bf16" if bf16 else " CPU f32")
    if bf16:  # judged at parity.bf16, looser than fp32's 1e-4, and bf16 really differs from fp32
        assert report["atol"] == workspace.params["parity"]["bf16"]["atol"], report
        assert report["max_abs_diff"] > 1e-3, report


def test_auto_without_a_recorded_choice_says_to_export_again(make_workspace):
    workspace = make_workspace()
    load_checkpoint.main()
    export.main()
    workspace.write_params(runtime={"backend": "auto"})
    with pytest.raises(UserError, match=r"runtime\.backend = auto but model\.json holds no serving choice"):
        infer.main()
