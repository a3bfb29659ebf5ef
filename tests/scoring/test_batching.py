"""Batches: every window once, within the row and token budgets."""

from __future__ import annotations

import numpy as np

from stages.scoring.batching import plan_batches


def test_batches_respect_rows_and_token_budget():
    lengths = [5, 100, 3, 50, 50, 7, 100, 1]
    batches = list(plan_batches(lengths, max_rows=3, max_tokens=200))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 200)
