"""Stage `benchmark`: serving engines side by side on the same tokenised rows, in one process.

Engines: torch eager fp32, torch bf16 autocast (CPU), onnxruntime fp32 and dynamic int8 (CPU); with a
CUDA device also torch eager fp16, and onnxruntime fp16 and fp32 on the CUDA provider with IO binding.
Rounds are end to end (tokenisation included) and alternate between engines (`stages.bench.harness`).
Achieved GFLOP/s (`stages.bench.flops`) is set against a matmul peak measured in the same run with the
same threads (`stages.bench.peaks`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from stages.bench.harness import BenchmarkSettings, read_texts
from stages.bench.report import format_report, plot_rows, summary
from stages.bench.serving import run_benchmark
from stages.bench.subject import SIZES, model_under_test
from stages.core.atomic import write_json
from stages.core.params import load_params
from stages.core.runner import run_stage


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="demo",
        help="demo: models/model (model.output); base: random mdeberta-v3-base shape",
    )
    parser.add_argument("--rows", type=positive, default=64, help="non-empty dataset rows, in dataset order")
    parser.add_argument("--batch", type=positive, default=8, help="rows per batch")
    parser.add_argument("--length", type=positive, default=128, help="tokens per row at most, special tokens included")
    parser.add_argument("--rounds", type=positive, default=3, help="timed rounds per engine")
    parser.add_argument("--warmup", type=non_negative, default=1, help="untimed rounds per engine first")
    parser.add_argument(
        "--threads", type=positive, default=len(os.sched_getaffinity(0)), help="torch and onnxruntime intra-op threads"
    )
    parser.add_argument("--tmp-dir", default=None, help="where the ONNX models are exported (default: the system's)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/benchmark.json"), help="a few numbers per engine")
    parser.add_argument("--report", type=Path, default=Path("metrics/benchmark_report.json"), help="the full report")
    parser.add_argument("--plots", type=Path, default=Path("metrics/benchmark_plots.json"))
    return parser.parse_args(argv)


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return number


def non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return number


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params()
    settings = BenchmarkSettings(
        size=args.size,
        rows=args.rows,
        batch=args.batch,
        length=args.length,
        rounds=args.rounds,
        warmup=args.warmup,
        threads=args.threads,
        truncation_side=params.model.truncation_side,
        runtime=params.runtime.on_cpu(args.threads),
        tmp_dir=args.tmp_dir,
    )
    model, tokenizer = model_under_test(settings.size, params)
    texts = read_texts(params.infer.input, params.infer.text_column, params.infer.id_column, settings.rows)
    report = run_benchmark(model, tokenizer, texts, settings)
    print(format_report(report))
    write_json(args.report, report)
    write_json(args.metrics, summary(report))
    write_json(args.plots, plot_rows(report))


if __name__ == "__main__":
    run_stage(main)
