"""`runtime.backend: openvino`: the same exported model served by OpenVINO through `parity` and `infer`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from stages import export, infer, load_checkpoint, parity
from stages.core.errors import UserError
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
    return report, details, pd.read_parquet(f"out/{backend}.parquet")


def spans(rows: pd.DataFrame) -> list[list[tuple]]:
    return [[(span["label"], span["start"], span["end"]) for span in row] for row in rows["spans"]]


def test_openvino_passes_the_gate_and_scores_onnxruntimes_labels(make_workspace):
    if importlib.util.find_spec("openvino") is None:
        unavailable("openvino is not installed (pip install -e '.[test]' installs it)")
    workspace = make_workspace("deberta-v2")
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
    print(f"openvino: parity max abs diff {report['max_abs_diff']:.2e} (onnxruntime {ort_report['max_abs_diff']:.2e})")


def test_openvino_missing_names_the_install(make_workspace, monkeypatch):
    workspace = make_workspace()
    load_checkpoint.main()
    export.main()
    workspace.write_params(runtime={"backend": "openvino"})
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if it were not installed
    with pytest.raises(UserError, match=r"runtime\.backend = openvino but openvino is not installed: pip install"):
        infer.main()
