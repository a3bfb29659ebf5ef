"""Every supported backbone family, at every exporter and precision, passes the parity gate (or exits 2 in one line)."""

from __future__ import annotations

import pytest

from tools.generate.support_matrix import EXPECTED_INPUTS, FAMILIES, SUPPORT_PAGE, render_row, run_family

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_row(family, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # restored afterwards; run_family works in tmp_path
    hub, *outcomes, outliers = run_family(tmp_path, family)
    assert hub.passed or family == "modernbert", hub.line  # its class adds a prediction head
    assert outliers.passed and outliers.parity["rows_label_agreement"] >= 0.99, outliers.line
    mix = outliers.sidecar["precision_conversion"]
    assert mix["mix"] == "accuracy_aware" and not mix["trials"][0]["passed"], mix  # full int8 fails the gate
    for outcome in outcomes:
        cell = f"{family} {outcome.exporter} {outcome.precision}"
        if not outcome.passed:
            assert "\n" not in outcome.line and " use " in outcome.line, f"{cell}: {outcome.line}"
            continue
        assert outcome.parity["passed"] and outcome.parity["precision"] == outcome.precision, cell
        assert [graph_input["name"] for graph_input in outcome.sidecar["inputs"]] == EXPECTED_INPUTS[family], cell
        if outcome.precision == "int8":  # every MatMul whose B input is a weight is quantized
            conversion = outcome.sidecar["precision_conversion"]
            assert conversion["weight_matmuls"] > 0, cell
            assert conversion["quantized_weight_matmuls"] == conversion["weight_matmuls"], (cell, conversion)
            assert conversion["float_weight_matmuls"] == 0 and conversion["mix"] == "full", (cell, conversion)
    page = SUPPORT_PAGE.read_text(encoding="utf-8")
    assert render_row(family, [hub, *outcomes, outliers]) in page, (
        "regenerate the table in docs/support.md: python -m tools.generate.support_matrix"
    )
