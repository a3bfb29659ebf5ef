"""End to end on real text: the hand-written torch loop against the project's real `infer`, at each precision.

    python -m stages.bench.end_to_end --size base --rows 1000            # mdeberta-v3-base shape
    python -m stages.bench.end_to_end --size demo --dataset my.parquet  # the pipeline's own model

The same rows go through (a) the baseline a user writes (`stages.bench.naive`: torch eager fp32,
dataset order, batches of 32 padded to their longest row) and (b) `python -m stages.infer` itself,
from reading the dataset to the finished Parquet file, once per served precision this machine can
run. Each run is its own process, so its peak RSS is its own; runs take turns when `--rounds` > 1.
Reported: texts/s, the ratio to the baseline, label agreement with the baseline's torch fp32 labels
on every real token, padding, peak RSS, and the fraction of the limit: the real tokens' model FLOPs
(`stages.bench.flops`) at the matmul peak measured here for the precision used (`stages.bench.peaks`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

import stages
from stages.bench.flops import flops_per_slot
from stages.bench.peaks import matmul_peak_samples, summarise_peaks
from stages.bench.subject import SIZES, normalised_model
from stages.core.cpu import describe_cpu
from stages.core.params import PARAMS_FILE, load_params
from stages.core.runner import run_stage
from stages.graph.onnx_dir import write_onnx_dir
from stages.scoring.dataset import iter_blocks

PROJECT_ROOT = Path(stages.__file__).resolve().parents[1]
PEAK_OF = {"torch fp32": "torch_fp32", "fp32": "onnxruntime_fp32", "int8": "onnxruntime_int8", "fp16": None}


@dataclasses.dataclass
class Run:
    """One engine's runs: seconds per run (reading to last output), and what its last run reported."""

    name: str
    precision: str
    seconds: list[float] = dataclasses.field(default_factory=list)
    report: dict = dataclasses.field(default_factory=dict)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)


def sample_rows(source: str, text_column: str, id_column: str, rows: int, target: Path) -> Path:
    """The dataset's first `rows` rows as one Parquet file, read by every run."""
    blocks, taken = [], 0
    for block in iter_blocks(source, text_column, id_column, rows):
        blocks.append(pa.table({"id": block.ids, "text": block.texts}))
        taken += len(block.texts)
        if taken >= rows:
            break
    pq.write_table(pa.concat_tables(blocks).slice(0, rows), target)
    return target


def subprocess_env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def run_naive(run: Run, model_dir: Path, dataset: Path, out: Path, max_length: int, threads: int) -> None:
    command = [sys.executable, "-m", "stages.bench.naive", "--model-dir", str(model_dir), "--dataset", str(dataset)]
    command += ["--max-length", str(max_length), "--threads", str(threads), "--out", str(out)]
    subprocess.run(command, env=subprocess_env(), check=True)
    run.report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    run.seconds.append(run.report["seconds"])


def run_infer(run: Run, workdir: Path) -> None:
    """`python -m stages.infer` in `workdir`, whose params.yaml points at the variant's model and outputs."""
    (workdir / "predictions.parquet").unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "stages.infer"], cwd=workdir, env=subprocess_env(), check=True)
    run.report = json.loads((workdir / "infer.json").read_text(encoding="utf-8"))
    run.seconds.append(run.report["seconds"])


def infer_workdir(raw_params: dict, onnx_dir: Path, dataset: Path, workdir: Path, threads: int) -> Path:
    """A directory with the user's params, pointed at one exported variant, the sampled rows and local outputs."""
    params = json.loads(json.dumps(raw_params))
    params["export"]["output"] = str(onnx_dir)
    params["runtime"]["intra_op_num_threads"] = threads
    params["infer"].update(
        input=str(dataset), output="predictions.parquet", metrics="infer.json", reference="none", engine="local"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return workdir


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


def measure(args: argparse.Namespace, work: Path) -> dict:
    """Export the variants, run every engine `args.rounds` times taking turns, and compare them."""
    params = load_params()
    raw_params = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    source = args.dataset or params.infer.input
    dataset = sample_rows(source, params.infer.text_column, params.infer.id_column, args.rows, work / "rows.parquet")
    model_dir, model = normalised_model(args.size, params, work / "model")
    precisions = ["fp32", "int8"] + (["fp16"] if torch.cuda.is_available() else [])
    workdirs = {}
    for precision in precisions:
        export = dataclasses.replace(params.export, precision=precision, output=str(work / precision / "onnx"))
        write_onnx_dir(model_dir, export, Path(export.output))
        workdirs[precision] = infer_workdir(raw_params, Path(export.output), dataset, work / precision, args.threads)
    peaks = summarise_peaks([matmul_peak_samples(params.runtime.on_cpu(args.threads))])
    runs = [Run("torch eager (hand-written loop)", "torch fp32")] + [
        Run("infer", precision) for precision in precisions
    ]
    for _ in range(args.rounds):
        run_naive(runs[0], model_dir, dataset, work / "naive", params.model.max_length, args.threads)
        for run in runs[1:]:
            run_infer(run, workdirs[run.precision])
    reference = labels_of(work / "naive" / "labels.parquet")
    rows = []
    counts = [len(labels) for labels in reference]
    flops = real_token_flops(counts, model.config, model.fc.out_features, specials=2)
    for run in runs:
        labels = reference if run is runs[0] else labels_of(workdirs[run.precision] / "predictions.parquet")
        rate = len(reference) / run.median_seconds
        peak = peaks.get(PEAK_OF[run.precision] or "", {}).get("gflop_per_s")
        limit = flops / (peak * 1e9) if peak else None
        rows.append(
            {
                "engine": run.name,
                "precision": run.precision,
                "seconds": round(run.median_seconds, 2),
                "texts_per_s": round(rate, 2),
                "vs_baseline": round(runs[0].median_seconds / run.median_seconds, 2),
                "label_agreement": round(agreement(reference, labels)[0], 5),
                "padding_ratio": run.report.get("padding_ratio"),
                "peak_rss_mb": run.report["peak_rss_mb"],
                "limit_seconds": None if limit is None else round(limit, 1),
                "fraction_of_limit": None if limit is None else round(limit / run.median_seconds, 3),
            }
        )
    return {
        "rows": rows,
        "texts": len(reference),
        "real_tokens": sum(counts),
        "model_flops": flops,
        "peaks": peaks,
        "cpu": describe_cpu(),
        "threads": args.threads,
        "size": args.size,
        "dataset": str(source),
        "rounds": args.rounds,
    }


def format_report(report: dict) -> str:
    header = ["engine", "precision", "seconds", "texts/s", "vs baseline", "agreement", "padding", "peak RSS MB"]
    lines = [
        f"end to end, --size {report['size']}: {report['texts']} rows of {report['dataset']} ({report['real_tokens']} "
        f"real tokens, {report['model_flops'] / 1e12:.2f} TFLOP); {report['threads']} threads on {report['cpu']}; "
        f"median of {report['rounds']} round(s)",
        "matmul peaks (GFLOP/s, int8 fp32-equivalent): "
        + ", ".join(f"{kind} {value['gflop_per_s']}" for kind, value in report["peaks"].items()),
        "| " + " | ".join([*header, "limit s", "of limit"]) + " |",
        "|" + "---|" * (len(header) + 2),
    ]
    for row in report["rows"]:
        padding = "-" if row["padding_ratio"] is None else f"{row['padding_ratio']:.1%}"
        fraction = "-" if row["fraction_of_limit"] is None else f"{row['fraction_of_limit']:.0%}"
        cells = [row["engine"], row["precision"], row["seconds"], row["texts_per_s"], f"{row['vs_baseline']}x"]
        cells += [f"{row['label_agreement']:.4f}", padding, row["peak_rss_mb"], row["limit_seconds"], fraction]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", choices=SIZES, default="base", help="demo: the pipeline's model; base: mdeberta shape"
    )
    parser.add_argument("--dataset", default=None, help="a .parquet/.csv/.jsonl dataset (default: infer.input)")
    parser.add_argument("--rows", type=int, default=1000, help="the dataset's first rows")
    parser.add_argument("--rounds", type=int, default=1, help="runs per engine, taking turns; medians reported")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tmp-dir", default=None, help="where models and outputs are written (default: the system's)")
    parser.add_argument("--metrics", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="end-to-end-", dir=args.tmp_dir) as scratch:
        report = measure(args, Path(scratch))
    print(format_report(report))
    print(f"(whole benchmark: {time.perf_counter() - started:.0f} s)")
    if args.metrics:
        args.metrics.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    run_stage(main)
