"""The `benchmark` section of `params.yaml` (kept beside `stages.core.params`, which holds the other sections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.core.parsing import setting


@dataclass(frozen=True)
class BenchmarkParams:
    """What the serving benchmark measures (stage `benchmark`): engines side by side on the same rows."""

    size: Literal["demo", "base"] = "demo"
    """`demo`: the pipeline's model (`model.output`); `base`: mdeberta-v3-base's shape with random weights."""
    rows: int = setting(64, 1)
    """Non-empty rows of `parity.input` (not `infer.input`: new data to score reruns only `infer`), in order."""
    batch: int = setting(8, 1)
    """Rows per batch, padded to their longest."""
    length: int = setting(128, 2)
    """Tokens per row at most, special tokens included."""
    rounds: int = setting(3, 1)
    """Timed rounds per serving variant, alternating between variants."""
    warmup: int = setting(1, 0)
    """Untimed rounds per variant first."""
    seed: int = 0
    """The random weights of size `base`."""
    metrics: str = "metrics/benchmark.json"
    """texts/s per serving variant (`dvc metrics`)."""
    report: str = "metrics/benchmark_report.json"
    """The full report: every variant's numbers, the machine, the settings."""
    plots: str = "metrics/benchmark_plots.json"
    """`dvc plots` data: texts/s per serving variant."""
