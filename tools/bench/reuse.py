"""Scoring a growing dataset: `dvc repro` from scratch, after appending rows, and after editing rows.

    python -m tools.bench.reuse --rows 200000      # prints a table: wall time, rows scored and reused per run

In a temporary copy of the pipeline, the dataset is real text (tests/data) repeated to `--rows` distinct rows
(each with its row number appended). Runs: `dvc repro` from scratch (every stage), then `infer` from scratch
alone (the store emptied), then after appending `--append` of new rows, then after editing `--edit` of the
rows; each line is that `dvc repro`'s wall time, the rows scored and reused, and its share of the full
run (every stage from scratch) and of the from-scratch scoring run. Print the machine's CPU with it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from stages.core.cpu import describe_cpu
from tools.cli import option, parse

REPO = Path(__file__).resolve().parents[2]
PIPELINE = (".dvcignore", ".dvc/config", ".dvc/.gitignore", ".dvc/plots", "dvc.yaml", "params.yaml", "stages",
            "data/validation.parquet", "models/demo")  # fmt: skip
REAL_TEXT = REPO / "tests/data/real_text.parquet"


@dataclass(frozen=True)
class Reuse:
    """The reuse benchmark's settings."""

    rows: int = option(200_000, "rows of the dataset scored from scratch")
    append: float = option(0.01, "share of new rows appended for the second run")
    edit: float = option(0.001, "share of rows edited (text changed in place) for the third run")
    seed: int = option(0, "which rows are edited")


def dataset(rows: int, first: int = 0) -> pd.DataFrame:
    """`rows` distinct rows of real multilingual text, numbered from `first`."""
    texts = pd.read_parquet(REAL_TEXT).text.tolist()
    numbers = range(first, first + rows)
    return pd.DataFrame(
        {"id": [f"row-{n}" for n in numbers], "text": [f"{texts[n % len(texts)]} {n}" for n in numbers]}
    )


def repro(root: Path, *arguments: str) -> tuple[float, dict]:
    """One `dvc repro`: its wall time, and infer's details."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "dvc", "repro", *arguments]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, json.loads((root / "metrics/infer_details.json").read_text())


def copy_pipeline(root: Path, data: pd.DataFrame) -> None:
    for name in PIPELINE:
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    data.to_parquet(root / "data/rows.parquet")
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["infer"]["input"] = "data/rows.parquet"
    params["annotations"]["format"] = "none"
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
    ):
        subprocess.run(command, cwd=root, check=True)


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(Reuse, argv, __doc__)
    root = Path(tempfile.mkdtemp(prefix="reuse-bench-"))
    try:
        data = dataset(settings.rows)
        copy_pipeline(root, data)
        runs = [("dvc repro from scratch (all stages)", *repro(root))]
        shutil.rmtree(root / "data/.score-store")
        runs.append(("infer from scratch (store emptied)", *repro(root, "-f", "-s", "infer")))
        data = pd.concat([data, dataset(round(settings.rows * settings.append), first=settings.rows)])
        data.to_parquet(root / "data/rows.parquet")
        runs.append((f"after appending {settings.append:.1%} new rows", *repro(root)))
        edited = np.random.default_rng(settings.seed).choice(
            len(data), round(settings.rows * settings.edit), replace=False
        )
        data.iloc[edited, 1] = data.iloc[edited, 1] + " (edited)"
        data.to_parquet(root / "data/rows.parquet")
        runs.append((f"after editing {settings.edit:.1%} of the rows", *repro(root)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    full, scoring = runs[0][1], runs[1][1]
    print(f"CPU: {describe_cpu()}")
    print("| run | wall s | rows | scored | reused | of the full run | of the from-scratch infer run |")
    print("|---|---|---|---|---|---|---|")
    for name, seconds, details in runs:
        print(f"| {name} | {seconds:.1f} | {details['rows']} | {details['scored_rows']} | {details['reused_rows']} | "
              f"{seconds / full:.1%} | {seconds / scoring:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
