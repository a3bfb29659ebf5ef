"""Stage `benchmark`: serving variants side by side on the same tokenised rows, in one process.

Variants: torch eager fp32, torch bf16 autocast (CPU), onnxruntime fp32 and dynamic int8 (CPU); with a
CUDA device also torch eager fp16, and onnxruntime fp16 and fp32 on the CUDA provider with IO binding.
Rounds are end to end (tokenisation included) and alternate between variants (`stages.bench.harness`).
Achieved GFLOP/s (`stages.bench.flops`) is set against a matmul peak measured in the same run with the
same threads (`stages.bench.peaks`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from stages.bench.harness import BenchmarkSettings, read_texts
from stages.bench.report import format_report, plot_rows, summary
from stages.bench.serving import run_benchmark
from stages.bench.subject import SIZES, model_under_test
from stages.core.atomic import write_json
from stages.core.declared import load_declared
from stages.core.runner import run_stage

PARAMS = ("model", "export", "runtime", "parity.input", "infer.text_column", "infer.id_column", "benchmark")
OVERRIDABLE = ("size", "rows", "batch", "length", "rounds", "warmup")  # benchmark.* keys a command line may override


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Overrides of the `benchmark` params for one run (`--size base`), and where to export."""
    parser = argparse.ArgumentParser(prog="python -m stages.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", choices=SIZES, help="benchmark.size: demo (model.output) or base (random mdeberta shape)"
    )
    for name in OVERRIDABLE[1:]:
        parser.add_argument(f"--{name}", type=int, help=f"benchmark.{name}")
    parser.add_argument("--tmp-dir", default=None, help="where the ONNX models are exported (default: the system's)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_declared(PARAMS)
    overrides = {name: getattr(args, name) for name in OVERRIDABLE if getattr(args, name) is not None}
    bench = dataclasses.replace(params.benchmark, **overrides)
    threads = params.runtime.intra_op_num_threads or len(os.sched_getaffinity(0))
    settings = BenchmarkSettings(
        size=bench.size,
        rows=bench.rows,
        batch=bench.batch,
        length=bench.length,
        rounds=bench.rounds,
        warmup=bench.warmup,
        threads=threads,
        truncation_side=params.model.truncation_side,
        runtime=params.runtime.on_cpu(threads),
        export=params.export,
        tmp_dir=args.tmp_dir,
    )
    model, tokenizer = model_under_test(settings.size, params)
    texts = read_texts(params.parity.input, params.infer.text_column, params.infer.id_column, settings.rows)
    report = run_benchmark(model, tokenizer, texts, settings)
    print(format_report(report))
    write_json(Path(bench.report), report)
    write_json(Path(bench.metrics), summary(report))
    write_json(Path(bench.plots), plot_rows(report))


if __name__ == "__main__":
    run_stage(main)
