"""Comparison statistics: over non-pad tokens only, NaN counted, the smallest passing atol exact."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.params import load_params
from stages.verify.compare import compare_case, explain_failure
from tests.conftest import REPO


def tolerance():
    return load_params(REPO / "params.yaml").parity.tolerance("fp32")


def batch_pair(rng: np.random.Generator):
    reference = rng.normal(size=(2, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return reference, reference.copy(), mask


def test_garbage_at_pad_positions_does_not_gate_but_at_a_real_token_does():
    reference, candidate, mask = batch_pair(np.random.default_rng(0))
    candidate[0, 3:] += 100.0
    case = compare_case("pads", [(reference, candidate, mask)], tolerance())
    assert case.passed and case.max_abs_diff == 0.0 and case.pad_max_abs_diff == pytest.approx(100.0)
    candidate[0, 2] += 100.0
    case = compare_case("real", [(reference, candidate, mask)], tolerance())
    assert (
        case.failed[0] == "values"
        and case.tokens_over_tolerance == 1  # one token's 4 logits: a count of tokens, as the message says
        and case.max_abs_diff == pytest.approx(100.0, rel=1e-4)
    )
    assert "real: 1 of 8 tokens have logits beyond atol" in explain_failure([case], tolerance(), "fp32")


def test_nan_in_onnx_output_fails_with_its_count():
    reference, candidate, mask = batch_pair(np.random.default_rng(1))
    candidate[1, 0, :2] = np.nan
    case = compare_case("nan", [(reference, candidate, mask)], tolerance())
    assert "finite" in case.failed and case.nan_onnx == 2 and case.nan_torch == 0
    assert "2 NaN" in explain_failure([case], tolerance(), "fp32")


def test_statistics_and_smallest_passing_atol():
    reference, candidate, mask = batch_pair(np.random.default_rng(2))
    candidate[1, 4, 0] = reference[1, 4, 0] + 0.5
    params = tolerance()
    case = compare_case("stats", [(reference, candidate, mask)], params)
    expected_atol = 0.5 - params.rtol * abs(reference[1, 4, 0])
    assert case.min_passing_atol == pytest.approx(expected_atol, rel=1e-4)
    assert case.tokens == 8 and case.mean_abs_diff == pytest.approx(0.5 / 32, rel=1e-4)


def test_a_grid_near_tie_that_flips_is_noise_and_a_rows_flip_or_a_decisive_flip_is_not():
    int8 = load_params(REPO / "params.yaml").parity.int8  # atol 1 + rtol 0.2: two logits may move 2 + 0.2 x both
    reference = np.array([[[5.0, 4.5, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]]], dtype=np.float32)  # a near-tie, a clear win
    candidate = reference.copy()
    candidate[0, 0, :2] = [4.6, 4.9]  # the near-tie flips, within the tolerance
    mask = np.ones((1, 2), dtype=np.int64)
    grid = compare_case("grid 1x2", [(reference, candidate, mask)], int8)
    assert grid.passed and grid.agreement_tokens == 1 and grid.label_agreement == 1.0
    rows = compare_case("rows", [(reference, candidate, mask)], int8, pooled=True)
    assert rows.failed == ("label_agreement",) and rows.agreement_tokens == 2 and rows.label_agreement == 0.5
    candidate[0, 1, :2] = [4.0, 4.5]  # the clear win flips: beyond the tolerance, and counted
    grid = compare_case("grid 1x2", [(reference, candidate, mask)], int8)
    assert grid.failed == ("values", "label_agreement") and grid.label_agreement == 0.0
