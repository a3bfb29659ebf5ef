"""End to end on real text: the hand-written torch loop against the project's real `infer`, at each precision.

    python -m tools.bench.end_to_end --size base --rows 1000            # mdeberta-v3-base shape
    python -m tools.bench.end_to_end --size demo --dataset my.parquet  # the pipeline's own model
    python -m tools.bench.end_to_end --size demo --outliers 1000       # ... given outlier channels
    python -m tools.bench.end_to_end --size base --planted-labels --outliers 1000

The same rows go through (a) the baseline a user writes (`tools.bench.naive`: torch eager fp32,
dataset order, batches of 32 padded to their longest row) and (b) `python -m stages.infer` itself,
from reading the dataset to the finished Parquet file, once per served precision this machine can
run (`tools.bench.exports`: fp32, full int8, accuracy-aware int8 as the export stage makes it,
fp16 on a GPU). Each run is its own process, so its peak RSS is its own; runs take turns when `--rounds` > 1.
Reported: texts/s, the ratio to the baseline, label agreement with the baseline's torch fp32 labels
on every real token, padding, peak RSS, and the fraction of the limit: the real tokens' model FLOPs
(`stages.bench.flops`) at the matmul peak measured here for the precision used (`stages.bench.peaks`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from stages.bench.flops import flops_per_slot
from stages.bench.peaks import matmul_peak_samples, summarise_peaks
from stages.core.cpu import describe_cpu, has_native_bf16
from stages.core.params import PARAMS_FILE, load_params
from stages.core.runner import run_stage
from stages.graph.runners import openvino_precisions
from stages.scoring.datasets.blocks import iter_blocks
from tools.bench.exports import (
    ACCURACY_AWARE,
    PEAK_OF_EXPORT,
    Run,
    export_served,
    mix_summary,
    openvino_served,
    run_infer,
    subprocess_env,
)
from tools.bench.settings import Subject
from tools.bench.subjects import normalised_model
from tools.cli import option, parse

LABELS_OF = {True: "predictions.parquet", False: "labels.parquet"}  # an infer run's file, a hand-written loop's


@dataclass(frozen=True)
class EndToEnd(Subject):
    """The end-to-end benchmark's settings."""

    rounds: int = option(1, "runs per engine, taking turns; medians reported")
    outliers: float = option(0.0, "give the model outlier channels this many times their size (0: none)")
    planted_labels: bool = option(False, "base: plant wide-margin labels (random weights leave near-ties)")
    tmp_dir: str | None = option(None, "where models and outputs are written (default: the system's)")
    metrics: Path | None = option(None, "also write the report as JSON here")


def first_rows_file(source: str, text_column: str, id_column: str, rows: int, target: Path) -> Path:
    """The dataset's first `rows` rows as one Parquet file, read by every run."""
    blocks, taken = [], 0
    for block in iter_blocks(source, text_column, id_column, rows):
        blocks.append(pa.table({"id": block.ids, "text": block.texts}))
        taken += len(block.texts)
        if taken >= rows:
            break
    pq.write_table(pa.concat_tables(blocks).slice(0, rows), target)
    return target


def run_naive(run: Run, model_dir: Path, dataset: Path, out: Path, max_length: int, threads: int) -> None:
    """The hand-written loop (`run.precision` torch bf16: sorted batches under bf16 autocast) in its own process."""
    command = [sys.executable, "-m", "tools.bench.naive", "--model-dir", str(model_dir), "--dataset", str(dataset)]
    command += ["--max-length", str(max_length), "--threads", str(threads), "--out", str(out)]
    command += ["--sorted-bf16"] if run.precision == "torch bf16" else []
    subprocess.run(command, env=subprocess_env(), check=True)
    run.report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    run.seconds.append(run.report["seconds"])


def agreement(reference: list[list[int]], labels: list[list[int]]) -> tuple[float, int]:
    """Share of real tokens whose label equals the reference's, and the tokens compared."""
    same = total = 0
    for expected, actual in zip(reference, labels, strict=True):
        if len(expected) != len(actual):
            raise ValueError(f"a row has {len(actual)} tokens here and {len(expected)} in the baseline")
        same += sum(a == b for a, b in zip(expected, actual, strict=True))
        total += len(expected)
    return (same / total if total else 1.0), total


def real_token_flops(token_counts: list[int], config, num_labels: int, specials: int) -> float:
    """The model FLOPs of every row's real tokens (special tokens included), unpadded."""
    return sum((count + specials) * flops_per_slot(config, num_labels, count + specials) for count in token_counts)


def labels_of(path: Path) -> list[list[int]]:
    return pq.read_table(path, columns=["label_ids"]).column("label_ids").to_pylist()


def measure(args: EndToEnd, work: Path) -> dict:
    """Export each served precision, run every engine `args.rounds` times taking turns, and compare them."""
    params = load_params()
    raw_params = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    source = args.dataset or params.infer.input
    dataset = first_rows_file(
        source, params.infer.text_column, params.infer.id_column, args.rows, work / "rows.parquet"
    )
    model_dir, model = normalised_model(args.size, params, work / "model", args.outliers, args.planted_labels)
    exports = ["fp32", "int8 full", ACCURACY_AWARE] + (["fp16"] if torch.cuda.is_available() else [])
    baseline = Run("torch eager (hand-written loop)", "torch fp32")
    sorted_bf16 = Run("torch autocast, sorted batches (hand-written)", "torch bf16", workdir=work / "naive-bf16")
    if not has_native_bf16():
        sorted_bf16.refused = "no native bf16 on this CPU: torch emulates it, several times slower than fp32"
    served = [export_served(name, params, raw_params, model_dir, dataset, work, args.threads) for name in exports]
    if openvino_precisions():
        served.append(openvino_served(served[0], raw_params, dataset, work, args.threads))
    runs = [baseline, sorted_bf16, *served]
    peaks = summarise_peaks([matmul_peak_samples(params.runtime.on_cpu(args.threads))])
    for _ in range(args.rounds):
        run_naive(baseline, model_dir, dataset, work / "naive", params.model.max_length, args.threads)
        if sorted_bf16.refused is None:
            run_naive(sorted_bf16, model_dir, dataset, sorted_bf16.workdir, params.model.max_length, args.threads)
        for run in served:
            if run.refused is None:
                run_infer(run)
    reference = labels_of(work / "naive" / "labels.parquet")
    counts = [len(labels) for labels in reference]
    flops = real_token_flops(counts, model.config, model.fc.out_features, specials=2)
    rows = [result_row(run, baseline, reference, flops, peaks) for run in runs]
    return {
        "rows": rows,
        "texts": len(reference),
        "real_tokens": sum(counts),
        "model_flops": flops,
        "peaks": peaks,
        "cpu": describe_cpu(),
        "threads": args.threads,
        "size": args.size,
        "model": str(model_dir),
        "outliers": args.outliers,
        "planted_labels": args.planted_labels,
        "dataset": str(source),
        "rounds": args.rounds,
    }


def result_row(run: Run, baseline: Run, reference: list[list[int]], flops: float, peaks: dict) -> dict:
    """One engine's line: speed against the baseline and the limit, agreement with its labels, export cost."""
    row = {
        "engine": run.name,
        "precision": run.precision,
        "export_seconds": None if run.export_seconds is None else round(run.export_seconds, 1),
        "mix": mix_summary(run.conversion),
        "refused": run.refused,
    }
    if run.refused is not None:
        return row
    labels = reference if run is baseline else labels_of(run.workdir / LABELS_OF[run.name == "infer"])
    peak = peaks.get(PEAK_OF_EXPORT[run.precision] or "", {}).get("gflop_per_s")
    limit = flops / (peak * 1e9) if peak else None
    return {
        **row,
        "seconds": round(run.median_seconds, 2),
        "texts_per_s": round(len(reference) / run.median_seconds, 2),
        "vs_baseline": round(baseline.median_seconds / run.median_seconds, 2),
        "label_agreement": round(agreement(reference, labels)[0], 5),
        "padding_ratio": run.report.get("padding_ratio"),
        "peak_rss_mb": run.report["peak_rss_mb"],
        "limit_seconds": None if limit is None else round(limit, 1),
        "fraction_of_limit": None if limit is None else round(limit / run.median_seconds, 3),
    }


def end_to_end_table(report: dict) -> str:
    header = ["engine", "precision", "seconds", "texts/s", "vs baseline", "agreement", "padding", "peak RSS MB"]
    header += ["limit s", "of limit", "export s", "int8 mix"]
    model = "" if report["size"] == "demo" and not report["outliers"] else f" (model: {report['model']})"
    lines = [
        f"end to end, --size {report['size']}{model}: {report['texts']} rows of {report['dataset']} "
        f"({report['real_tokens']} real tokens, {report['model_flops'] / 1e12:.2f} TFLOP); {report['threads']} threads "
        f"on {report['cpu']}; median of {report['rounds']} round(s)",
        "matmul peaks (GFLOP/s, int8 fp32-equivalent): "
        + ", ".join(f"{kind} {value['gflop_per_s']}" for kind, value in report["peaks"].items()),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in report["rows"]:
        if row["refused"] is not None:
            lines.append(f"| {row['engine']} | {row['precision']} | export refused: {row['refused']} |")
            continue
        padding = "-" if row["padding_ratio"] is None else f"{row['padding_ratio']:.1%}"
        fraction = "-" if row["fraction_of_limit"] is None else f"{row['fraction_of_limit']:.0%}"
        cells = [row["engine"], row["precision"], row["seconds"], row["texts_per_s"], f"{row['vs_baseline']}x"]
        cells += [f"{row['label_agreement']:.4f}", padding, row["peak_rss_mb"], row["limit_seconds"], fraction]
        cells += ["-" if row["export_seconds"] is None else row["export_seconds"], row["mix"]]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(EndToEnd, argv, __doc__)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="end-to-end-", dir=args.tmp_dir) as scratch:
        report = measure(args, Path(scratch))
    print(end_to_end_table(report))
    print(f"(whole benchmark: {time.perf_counter() - started:.0f} s)")
    if args.metrics:
        args.metrics.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    run_stage(main)
