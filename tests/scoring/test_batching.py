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


def test_the_attention_budget_caps_rows_by_length_squared():
    lengths = [512, 512, 300, 256, 256, 256, 64, 64, 64, 64, 64]
    batches = list(plan_batches(lengths, max_rows=64, max_tokens=4096, max_attention=512**2))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest**2 <= 512**2
    assert [len(batch) for batch in batches][:3] == [1, 1, 2]  # 512 alone, twice; then 300 with a 256
