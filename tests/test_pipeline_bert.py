"""The real `dvc repro` with another family than the demo's: a BERT checkpoint saved the seed's way, at int8.

Its own file so that a parallel run (`pytest -n 2 --dist loadfile`) can run it beside the demo's pipeline tests."""

from __future__ import annotations

import json
import sys

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tests.backbones import make_backbone
from tests.test_pipeline import REPO, copy_pipeline, run

BERT_ROWS = 1500

pytestmark = pytest.mark.slow


def test_a_bert_checkpoint_saved_the_seeds_way_runs_every_stage_at_int8(tmp_path):
    """Another family than the demo's, at int8, on real text: all five stages, the benchmark included."""
    copy_pipeline(tmp_path)
    model = make_backbone(tmp_path / "models/bert/backbone", "bert")  # trained on the demo's rule labels
    torch.save(model.state_dict(), tmp_path / "models/bert/model.ckpt")
    pq.write_table(pq.read_table(REPO / "data/demo.parquet").slice(0, BERT_ROWS), tmp_path / "data/rows.parquet")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
    params["model"].update(backbone="models/bert/backbone", checkpoint="models/bert/model.ckpt", max_length=128)
    params["export"].update(precision="int8")
    params["infer"].update(input="data/rows.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    result = run([sys.executable, "-m", "dvc", "repro"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    parity = json.loads((tmp_path / "metrics/parity.json").read_text())
    assert parity["passed"] and parity["precision"] == "int8"
    assert parity["rows_label_agreement"] >= 0.99  # int8 vs torch fp32, on real rows
    assert json.loads((tmp_path / "metrics/infer.json").read_text())["rows"] == BERT_ROWS
    engines = set(json.loads((tmp_path / "metrics/benchmark.json").read_text()))
    assert {"torch-fp32", "ort-fp32", "ort-int8"} <= engines
