"""The int8 GEMM probe runs each GEMM it reports and reads the tile permission as Linux reports it."""

from __future__ import annotations

from tools.bench.int8_gemm import Int8Gemm, shape_rates, tile_permission


def test_each_gemm_runs_and_the_permission_is_read():
    rates = shape_rates(64, 128, 96, Int8Gemm(threads=1, repeats=2))
    assert len(rates) == 3 and all(rate > 0 for rate in rates), rates
    assert tile_permission().startswith(("granted", "not granted", "not reported")), tile_permission()
