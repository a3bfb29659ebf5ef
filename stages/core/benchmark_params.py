"""The `benchmark` section of `params.yaml` (kept beside `stages.core.params`, which holds the other sections)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stages.core.parsing import value_range as _range


@dataclass(frozen=True)
class BenchmarkParams:
    """What the serving benchmark measures (stage `benchmark`): engines side by side on the same rows."""

    size: Literal["demo", "base"]
    """`demo`: the pipeline's model (`model.output`); `base`: mdeberta-v3-base's shape with random weights."""
    rows: int = field(metadata=_range(1))
    """Non-empty rows of `parity.input` (not `infer.input`: new data to score reruns only `infer`), in order."""
    batch: int = field(metadata=_range(1))
    """Rows per batch, padded to their longest."""
    length: int = field(metadata=_range(2))
    """Tokens per row at most, special tokens included."""
    rounds: int = field(metadata=_range(1))
    """Timed rounds per serving variant, alternating between variants."""
    warmup: int = field(metadata=_range(0))
    """Untimed rounds per variant first."""
    seed: int
    """The random weights of size `base`."""
    metrics: str
    """texts/s per serving variant (`dvc metrics`)."""
    report: str
    """The full report: every variant's numbers, the machine, the settings."""
    plots: str
    """`dvc plots` data: texts/s per serving variant."""
