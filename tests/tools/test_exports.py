"""The benchmark tools' infer working directories: params the stages read without complaint, no score store, long
texts truncated as the hand-written loop truncates them."""

from __future__ import annotations

import logging

import yaml

from stages.core.params import PARAMS_FILE, load_params
from tools.bench.exports import infer_workdir


def test_an_infer_workdir_writes_only_current_params_and_scores_every_round(tmp_path, caplog):
    raw = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    workdir = infer_workdir(raw, tmp_path / "onnx", tmp_path / "rows.parquet", tmp_path / "work", threads=1)
    with caplog.at_level(logging.WARNING):
        params = load_params(workdir / "params.yaml")
    assert not caplog.records, [record.getMessage() for record in caplog.records]
    assert params.infer.input == str(tmp_path / "rows.parquet") and params.runtime.intra_op_num_threads == 1
    assert not params.infer.reuse  # a second timed round must score, not read the first round's scores back
    assert params.infer.long_text == "truncate"  # the hand-written loop truncates: both score the same tokens
