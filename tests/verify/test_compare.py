"""Comparison statistics: over non-pad tokens only, NaN counted, the smallest passing atol exact."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.params import load_params
from stages.verify.compare import compare_case, pooled_grid_values
from stages.verify.explain import explain_failure
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


def fine_tuned_logits(rng: np.random.Generator, tokens: int) -> np.ndarray:
    """[1, tokens, 4] logits of a fine-tuned model: one label ~12 above the others on every token."""
    logits = rng.normal(scale=1.5, size=(1, tokens, 4)).astype(np.float32)
    logits[0, np.arange(tokens), rng.integers(0, 4, tokens)] += 12.0
    return logits


def test_a_reduced_precision_may_move_a_few_logits_beyond_tolerance_and_fp32_none():
    rng = np.random.default_rng(3)
    params = load_params(REPO / "params.yaml").parity
    int8 = params.int8
    allowed = int(int8.outlier_share * 2000)  # 20 of 2,000 tokens at the default 1%
    reference = fine_tuned_logits(rng, 2000)
    candidate = reference + rng.normal(scale=0.1, size=reference.shape).astype(np.float32)
    moved = rng.choice(2000, allowed + 1, replace=False)
    candidate[0, moved[:allowed], 1] += 6.0  # tokens moved by several units, their labels kept
    mask = np.ones((1, 2000), dtype=np.int64)
    rows = compare_case("rows", [(reference, candidate, mask)], int8, pooled=True)
    assert allowed >= 2 and rows.passed and (rows.tokens_over_tolerance, rows.tokens_over_allowed) == (allowed, allowed)
    assert rows.max_abs_diff > 5.5  # the largest difference is still reported
    excess = (np.abs(candidate - reference) - int8.rtol * np.abs(reference)).max(axis=-1)[0]
    assert rows.min_passing_atol == pytest.approx(np.sort(excess)[-allowed - 1])  # the first one not allowed decides
    candidate[0, moved[allowed], 2] += 6.0  # one more: beyond the share
    rows = compare_case("rows", [(reference, candidate, mask)], int8, pooled=True)
    assert rows.failed == ("values",) and rows.tokens_over_tolerance == allowed + 1
    assert (
        f"{allowed + 1} of 2000 tokens have logits beyond atol 1 + rtol 0.2 x |torch|, {allowed} allowed by "
        "parity.int8.outlier_share" in explain_failure([rows], int8, "int8")
    )
    strict = compare_case("rows", [(reference, reference + 2e-4, mask)], params.tolerance("fp32"), pooled=True)
    assert strict.tokens_over_allowed == 0 and strict.failed == ("values",)  # fp32: every token, as before


def test_a_broken_graph_that_keeps_most_labels_is_beyond_tolerance_on_many_tokens():
    rng = np.random.default_rng(4)
    int8 = load_params(REPO / "params.yaml").parity.int8
    reference = fine_tuned_logits(rng, 2000)
    candidate = 1.5 * reference  # a wrong scale in the graph: every argmax kept
    rows = compare_case("rows", [(reference, candidate, np.ones((1, 2000), dtype=np.int64))], int8, pooled=True)
    assert rows.label_agreement == 1.0 and rows.failed == ("values",) and rows.tokens_over_tolerance > 1000


def test_the_grid_allows_outliers_over_its_tokens_pooled():
    rng = np.random.default_rng(5)
    int8 = load_params(REPO / "params.yaml").parity.int8
    shapes = {"grid 1x1": 1, "grid 1x512": 512, "grid 3x512": 1536}
    allowed = int(int8.outlier_share * sum(shapes.values()))
    pairs = {name: fine_tuned_logits(rng, tokens) for name, tokens in shapes.items()}
    candidates = {name: logits.copy() for name, logits in pairs.items()}
    candidates["grid 1x1"][0, 0, 0] += 8.0  # one random-id token moved: alone, the 1x1 case is all outlier
    candidates["grid 3x512"][0, : allowed - 1, 3] += 8.0  # with these, as many as the grid's share allows

    def judged() -> list:
        grid = [
            compare_case(name, [(pairs[name], candidates[name], np.ones((1, shapes[name]), dtype=np.int64))], int8)
            for name in shapes
        ]
        return pooled_grid_values(grid, int8)

    assert all(case.passed for case in judged())
    candidates["grid 3x512"][0, allowed + 5, 3] += 8.0  # one more of the grid's tokens: over the share
    assert [case.failed for case in judged()] == [("values",), (), ("values",)]
