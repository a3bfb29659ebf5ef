"""int8 for a fine-tuned encoder as users hold one: the real `dvc repro` on `tests/data/finetuned-bert` (a BERT with
outlier channels in every block, fine-tuned on the demo rule to logits of 10 and more; `python -m tools.demo.finetuned`
made it). Full int8 is refused on the rows' labels, as a real MiniLM's was; the search floats a few MatMuls and
passes with most of the work int8; a graph whose values are wrong but whose labels mostly agree is still refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml
from onnx import helper, numpy_helper

from tests.test_pipeline import REPO, copy_pipeline, run
from tools.demo.rules import DEMO_LABELS

pytestmark = pytest.mark.slow
FINETUNED = REPO / "tests/data/finetuned-bert"
MIN_INT8_WORK = 0.8  # the share of the weight MatMuls' work a passing mix keeps int8


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc repro` at int8 in a copy of the pipeline pointed at the fine-tuned model, scoring 300 demo rows."""
    root = tmp_path_factory.mktemp("finetuned")
    copy_pipeline(root)
    shutil.copytree(FINETUNED, root / "models/finetuned")
    pd.read_parquet(root / "data/demo.parquet").head(300).to_parquet(root / "data/rows.parquet")
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["model"].update(
        backbone="models/finetuned", checkpoint="models/finetuned/model.ckpt", labels=list(DEMO_LABELS)
    )
    params["export"].update(exporter="torchscript", opset=17, precision="int8")
    params["infer"].update(input="data/rows.parquet")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    result = run([sys.executable, "-m", "dvc", "repro", "infer"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_full_int8_is_refused_and_a_mix_of_mostly_int8_passes_through_dvc_repro(repro):
    conversion = json.loads((repro / "models/onnx/model.json").read_text())["precision_conversion"]
    trials = conversion["trials"]
    full = trials[0]
    assert (full["graph"], full["float"], full["passed"]) == ("plain", [], False), full
    assert full["rows_label_agreement"] < 0.999  # the labels move, as they did for a real fine-tuned MiniLM
    first_pass = next(index for index, trial in enumerate(trials) if trial["passed"])
    assert first_pass > 1 and not any(trial["passed"] for trial in trials[:first_pass])  # no mix before it passed
    assert conversion["mix"] == "accuracy_aware" and 0 < conversion["float_work_share"] <= 1 - MIN_INT8_WORK
    assert conversion["float_matmuls"], conversion  # a few MatMuls stay float, each with its reason
    parity = json.loads((repro / "metrics/parity.json").read_text())
    assert parity["passed"] and parity["precision"] == "int8" and parity["outlier_share"] > 0
    cases = json.loads((repro / "metrics/parity_cases.json").read_text())
    over = sum(case["tokens_over_tolerance"] for name, case in cases.items() if name.startswith("grid "))
    assert over > 0, "the passing mix has tokens beyond tolerance: judged by the maximum, it would be refused"
    assert json.loads((repro / "metrics/infer.json").read_text())["verified"] is True


def test_an_int8_graph_with_wrong_values_and_mostly_right_labels_is_refused(repro):
    """Logits 1.3x what they should be: every label kept, the values beyond tolerance on many tokens."""
    path = repro / "models/onnx/model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    output = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Mul", [f"{output}_unscaled", "wrong_scale"], [output]))
    for node in model.graph.node[:-1]:
        node.output[:] = [f"{output}_unscaled" if name == output else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.float32(1.3), "wrong_scale"))
    onnx.save(model, str(path))
    result = run([sys.executable, "-m", "stages.parity"], repro)
    assert result.returncode == 1, result.stderr[-2000:]
    parity = json.loads((repro / "metrics/parity.json").read_text())
    assert parity["rows_label_agreement"] >= 0.999 and "rows: values" in parity["failures"], parity
    assert "tokens have logits beyond atol 1 + rtol 0.2 x |torch|" in result.stderr
