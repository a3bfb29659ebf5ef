"""The int8 GEMM probe runs each GEMM it reports and reads the tile permission as Linux reports it; its per-token
GEMM quantizes each row on its own, as per-token scales mean."""

from __future__ import annotations

import numpy as np

from stages.graph.precision import resolve_int8_target
from tools.bench.int8_gemm import Int8Gemm, per_token_session, shape_rates, tile_permission


def test_each_gemm_runs_and_the_permission_is_read():
    rates = shape_rates(64, 128, 96, Int8Gemm(threads=1, repeats=2))
    assert len(rates) == 4 and all(rate > 0 for rate in rates), rates
    assert tile_permission().startswith(("granted", "not granted", "not reported")), tile_permission()


def test_the_per_token_gemm_gives_each_row_the_same_result_whatever_rows_share_its_batch():
    rng = np.random.default_rng(0)
    # Without VNNI, onnxruntime's u8 x s8 kernel sums pairs in saturating int16: weights get 7 bits there, as the int8
    # export gives them (full-range weights put the error at 29% of the largest output on an AVX2-only EPYC).
    largest = 63 if resolve_int8_target("auto") == "no_vnni" else 127
    weight = rng.integers(-largest, largest + 1, (64, 32)).astype(np.int8)
    rows = rng.standard_normal((4, 64)).astype(np.float32)
    outlier = 100 * rng.standard_normal((1, 64)).astype(np.float32)
    session = per_token_session(weight, threads=1)
    alone = session.run(None, {"a": rows})[0]
    beside_an_outlier = session.run(None, {"a": np.concatenate([rows, outlier])})[0][:4]
    assert np.array_equal(alone, beside_an_outlier)  # one scale per row: an outlier row coarsens no other
    exact = rows @ (weight.astype(np.float32) * 0.01)
    assert np.abs(alone - exact).max() < 0.02 * np.abs(exact).max()  # int8 rounding, nothing more
