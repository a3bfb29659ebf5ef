"""Each int8 remedy on each family's model with outlier channels, judged as the parity gate judges (rows and grid,
`parity.int8`, against the fp32 ONNX model): what docs/int8.md's remedy table shows.

    python -m tools.generate.int8_remedies            # this CPU's int8 target
    python -m tools.generate.int8_remedies no_vnni    # 7-bit weights, as served on AVX2

Full int8 and static per-tensor int8 (QDQ, activation ranges calibrated on the rows) are what the export
stage does not keep; scale migration (`stages.quantize.smoothing`) and the float fallback are its steps 2 and 3,
each tried alone here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from stages import load_checkpoint
from stages.graph.precision import quiet_root_logger, resolve_int8_target
from stages.graph.session import build_feed, create_session
from stages.quantize.policy import fall_back
from stages.quantize.trials import PLAIN, SMOOTHED, MixSearch, Trial
from tests.conftest import build_workspace
from tests.quantize.test_policy import mix_search
from tools.cli import option, parse
from tools.generate.support_matrix import FAMILIES


class RowBatches(CalibrationDataReader):
    """The calibration rows, fed as the session declares its inputs."""

    def __init__(self, search: MixSearch) -> None:
        session = create_session(search.graphs[PLAIN], search.runtime)
        self.feeds = iter([build_feed(session, arrays) for arrays in search.calibration_rows()])

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def static_int8(search: MixSearch) -> Trial:
    """Static int8: per-channel weights, per-tensor activation ranges calibrated on the rows (QDQ)."""
    path = search.graphs[PLAIN].with_name("static.onnx")
    with quiet_root_logger():
        quantize_static(
            str(search.graphs[PLAIN]), str(path), RowBatches(search), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], reduce_range=search.target == "no_vnni",
        )  # fmt: skip
    return Trial(PLAIN, (), search.judge(path), path)


def remedies(search: MixSearch) -> dict[str, Trial]:
    """Every remedy alone on the plain graph, then scale migration."""
    results = {"full int8": search.trial(()), "static int8 (per-tensor, calibrated)": static_int8(search)}
    results["float fallback alone"] = fall_back(search, PLAIN)[0]
    search.smooth()
    results["scale migration alone"] = search.trial((), SMOOTHED)
    return results


def family_lines(family: str, target: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix=f"remedies-{family}-") as root:
        os.chdir(root)
        workspace = build_workspace(Path(root), family, outliers=True)
        workspace.write_params(export={"precision": "int8", "int8_target": target})
        load_checkpoint.main()
        search = mix_search()
        lines = []
        for remedy, trial in remedies(search).items():
            floats = ", ".join(f"`{name}`" for name in search.names(trial.floats)) or "none"
            lines.append(
                f"| {FAMILIES[family]} | {remedy} | {'✓' if trial.passed else '✗'} | {trial.rows_label_agreement:.4f} | "
                f"{trial.label_agreement:.4f} | {trial.max_abs_diff:.3f} | {floats} |"
            )
        return lines


@dataclass(frozen=True)
class Remedies:
    """The remedy table's settings."""

    target: Literal["auto", "vnni", "no_vnni"] = option("auto", "the int8 target (auto: this CPU's)")


def main(argv: Sequence[str] | None = None) -> None:
    target = resolve_int8_target(parse(Remedies, argv, __doc__).target)
    print(f"int8 target: {target}")
    print("| family | remedy | gate | rows agreement | lowest agreement | max abs diff | float |")
    print("|---|---|---|---|---|---|---|")
    for family in FAMILIES:
        print("\n".join(family_lines(family, target)), flush=True)


if __name__ == "__main__":
    main()
