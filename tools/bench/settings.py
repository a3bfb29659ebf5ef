"""What every benchmark tool measures on: the model under test and the rows (`--size`, `--dataset`, `--rows`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tools.cli import option


def all_threads() -> int:
    return torch.get_num_threads()


@dataclass(frozen=True)
class Subject:
    """The model under test and the rows a benchmark reads."""

    size: Literal["demo", "base"] = option("base", "demo: the pipeline's model (model.output); base: mdeberta shape")
    dataset: str | None = option(None, "a .parquet/.csv/.jsonl dataset (default: infer.input)")
    rows: int = option(1000, "the dataset's first rows")
    threads: int = option(help="CPU threads of every run (default: all)", factory=all_threads)
