"""The batch-budget sweep runs the real `infer` under each budget: the same labels under every one, each budget
taking effect (its batches differ), one table row per budget with the params' own first."""

from __future__ import annotations

import argparse

import pyarrow.parquet as pq
import pytest

from stages import load_checkpoint
from tools.bench.budgets import BUDGETS, budget_runs, budget_table
from tools.bench.exports import run_infer

pytestmark = pytest.mark.slow  # a benchmark: seven infer processes


def test_every_budget_gives_the_same_labels_and_a_row(make_workspace, tmp_path):
    make_workspace("bert", rows=60)
    load_checkpoint.main()
    args = argparse.Namespace(size="demo", dataset=None, rows=60, precision="int8", threads=1)
    (tmp_path / "work").mkdir()
    runs, facts = budget_runs(args, tmp_path / "work")
    for _, run in runs:
        run_infer(run)
    labels = [pq.read_table(run.workdir / "predictions.parquet").column("label_ids").to_pylist() for _, run in runs]
    assert all(found == labels[0] for found in labels[1:])  # budgets change batches, never results
    paddings = {run.report["padding_ratio"] for _, run in runs}
    assert len(paddings) > 1, paddings  # the budgets reached infer: their batches differ
    table = budget_table(runs).splitlines()
    assert len(table) == 2 + len(runs) and len(runs) >= len(BUDGETS) and "| 1.00x |" in table[2]
    assert facts["rows"] == 60
