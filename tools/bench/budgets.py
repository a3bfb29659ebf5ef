"""Batch budgets side by side: the real `infer` on the same rows under each (rows, padded slots, rows x length^2).

    python -m tools.bench.budgets --size base --rows 600                 # int8, mdeberta-v3-base shape
    python -m tools.bench.budgets --size base --precision fp32 --rounds 2

The budgets decide the batch shapes long rows get (`infer.max_batch_attention` 262,144 gives one 512-token
row per batch, four at 256). Each budget runs `python -m stages.infer` in its own process on one exported
model, rounds taking turns, so machine noise hits every budget alike. Reported per budget: seconds, texts/s,
the ratio to the params' own budget, model seconds, padding and peak RSS (the 1,000 MB goal at base shape).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from stages.core.cpu import describe_cpu
from stages.core.params import PARAMS_FILE, load_params
from stages.core.runner import run_stage
from tools.bench.end_to_end import first_rows_file
from tools.bench.exports import Run, export_served, infer_workdir, run_infer
from tools.bench.settings import Subject
from tools.bench.subjects import normalised_model
from tools.cli import option, parse

BUDGETS = (  # (rows, padded token slots, rows x length^2) per batch; the first is replaced by the params' own
    (64, 4096, 262_144),
    (64, 8192, 262_144),
    (64, 4096, 1_048_576),
    (64, 8192, 1_048_576),
    (128, 8192, 524_288),
    (32, 2048, 131_072),
)


@dataclass(frozen=True)
class Budgets(Subject):
    """The budget sweep's settings."""

    rows: int = option(600, "the dataset's first rows")
    precision: Literal["int8", "fp32"] = option("int8", "the served precision every budget runs")
    rounds: int = option(1, "runs per budget, taking turns; medians reported")


def budget_runs(args: Budgets, work: Path) -> tuple[list[tuple[tuple[int, int, int], Run]], dict]:
    """One exported model, and one infer directory per budget pointing at it."""
    params = load_params()
    raw_params = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    source = args.dataset or params.infer.input
    dataset = first_rows_file(
        source, params.infer.text_column, params.infer.id_column, args.rows, work / "rows.parquet"
    )
    model_dir, _ = normalised_model(args.size, params, work / "model")
    served = "int8 full" if args.precision == "int8" else "fp32"
    exported = export_served(served, params, raw_params, model_dir, dataset, work, args.threads)
    own = (params.infer.batch_size, params.infer.max_batch_tokens, params.infer.max_batch_attention)
    budgets = [own, *(budget for budget in BUDGETS if budget != own)]
    runs = []
    for budget in budgets:
        settings = json.loads(json.dumps(raw_params))
        settings["infer"].update(batch_size=budget[0], max_batch_tokens=budget[1], max_batch_attention=budget[2])
        directory = work / "budget-{}-{}-{}".format(*budget)
        infer_workdir(settings, exported.workdir / "onnx", dataset, directory, args.threads)
        runs.append((budget, Run("infer", args.precision, workdir=directory)))
    return runs, {"dataset": str(source), "rows": args.rows}


def budget_table(runs: list[tuple[tuple[int, int, int], Run]]) -> str:
    own_seconds = runs[0][1].median_seconds
    lines = [
        "| rows | padded slots | rows x length^2 | seconds | texts/s | vs params' budget | model s (last round) | padding "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (rows, slots, attention), run in runs:
        details = json.loads((run.workdir / "metrics" / "infer_details.json").read_text(encoding="utf-8"))
        texts_per_s = run.report["rows"] / run.median_seconds
        cells = [rows, f"{slots:,}", f"{attention:,}", f"{run.median_seconds:.1f}", f"{texts_per_s:.2f}"]
        cells += [f"{own_seconds / run.median_seconds:.2f}x", details["model_seconds"]]
        cells += [f"{run.report['padding_ratio']:.1%}", run.report["peak_rss_mb"]]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(Budgets, argv, __doc__)
    with tempfile.TemporaryDirectory(prefix="budgets-") as scratch:
        runs, facts = budget_runs(args, Path(scratch))
        for _ in range(args.rounds):
            for _, run in runs:
                run_infer(run)
        print(
            f"batch budgets, --size {args.size}, {args.precision}: {facts['rows']} rows of {facts['dataset']}; "
            f"{args.threads} threads on {describe_cpu()}; median of {args.rounds} round(s)"
        )
        print(budget_table(runs))


if __name__ == "__main__":
    run_stage(main)
