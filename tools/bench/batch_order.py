"""Benchmark: length-aware vs fixed-order batching, end to end (tokenisation included), side by side.

    python -m tools.bench.batch_order --size demo --rows 4096
    python -m tools.bench.batch_order --size base --rows 512

Both modes score the same rows with the same session and batch size; fixed-order batches take rows
as they come, length-aware batches sort them by length first (as `infer` does inside a window).
Rounds alternate between the modes in one process, so machine noise hits both alike.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import torch

from stages.bench.harness import read_texts
from stages.bench.subject import export_fp32, model_under_test
from stages.core.params import load_params
from stages.core.runner import run_stage
from stages.graph.session import create_session, onnx_logits
from stages.scoring.batching import pad_batch, plan_batches
from stages.scoring.tokens import Framing, TextTokenizer
from stages.scoring.windows import Window, make_windows
from tools.bench.settings import all_threads
from tools.cli import option, parse


@dataclass
class ModeResult:
    name: str
    seconds: list[float]
    tokens: int
    slots: int

    @property
    def padding_ratio(self) -> float:
        return 1 - self.tokens / self.slots


def score(
    session: ort.InferenceSession,
    tokenizer: TextTokenizer,
    framing: Framing,
    texts: list[str],
    batching: Callable[[list[Window]], list[np.ndarray]],
) -> tuple[int, int]:
    """Tokenise, window, batch and run all texts; returns (real tokens, padded slots)."""
    windows = make_windows(tokenizer.encode(texts), framing, "truncate", 0)
    tokens = slots = 0
    for indices in batching(windows):
        arrays = pad_batch([windows[index].input_ids for index in indices], tokenizer.pad_id)
        onnx_logits(session, arrays)
        tokens += int(arrays["attention_mask"].sum())
        slots += arrays["attention_mask"].size
    return tokens, slots


def fixed_order(batch_size: int) -> Callable[[list[Window]], list[np.ndarray]]:
    return lambda windows: [
        np.arange(start, min(start + batch_size, len(windows))) for start in range(0, len(windows), batch_size)
    ]


def length_aware(batch_size: int) -> Callable[[list[Window]], list[np.ndarray]]:
    return lambda windows: list(plan_batches([len(window) for window in windows], batch_size, batch_size * 10**6))


def run(size: str, rows: int, batch_size: int, max_length: int, rounds: int, threads: int) -> list[ModeResult]:
    """Alternate the two modes for `rounds` rounds after one warm-up batch each, on `infer.input`'s first rows."""
    params = load_params()
    infer = params.infer
    texts = read_texts(infer.input, infer.text_column, infer.id_column, rows)
    model, tokenizer = model_under_test(size, params)
    framing = tokenizer.framing(max_length, params.model.truncation_side)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as scratch:
        session = create_session(export_fp32(model, Path(scratch), params.export), params.runtime.on_cpu(threads))
        del model
        modes = {"fixed-order": fixed_order(batch_size), "length-aware": length_aware(batch_size)}
        results = {name: ModeResult(name, [], 0, 0) for name in modes}
        for batching in modes.values():
            score(session, tokenizer, framing, texts[:batch_size], batching)  # warm-up
        for _ in range(rounds):
            for name, batching in modes.items():
                started = time.perf_counter()
                tokens, slots = score(session, tokenizer, framing, texts, batching)
                results[name].seconds.append(time.perf_counter() - started)
                results[name].tokens, results[name].slots = tokens, slots
    return list(results.values())


def report(results: list[ModeResult], rows: int, size: str, batch_size: int, threads: int) -> str:
    baseline = rows / float(np.median(results[0].seconds))
    lines = [
        f"size={size} rows={rows} batch_size={batch_size} threads={threads} onnxruntime {ort.__version__} (CPU, fp32)",
        f"{'mode':<14} {'texts/s':>9} {'tokens/s':>10} {'padding':>8} {'slots':>9} {'vs fixed':>9}  seconds per round",
    ]
    for result in results:
        rate = rows / float(np.median(result.seconds))
        lines.append(
            f"{result.name:<14} {rate:>9.1f} {result.tokens / float(np.median(result.seconds)):>10.0f} "
            f"{result.padding_ratio:>8.1%} {result.slots:>9} {rate / baseline:>8.2f}x  "
            + " ".join(f"{seconds:.1f}" for seconds in result.seconds)
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class BatchOrder:
    """The batching benchmark's settings."""

    size: Literal["demo", "base"] = option("demo", "demo: the pipeline's model (model.output); base: mdeberta shape")
    rows: int = option(4096, "infer.input's first rows")
    batch_size: int = option(32, "rows per batch, in both modes")
    max_length: int = option(512, "tokens per row at most")
    rounds: int = option(3, "rounds per mode, alternating; medians reported")
    threads: int = option(help="onnxruntime's threads (default: all)", factory=all_threads)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(BatchOrder, argv, __doc__)
    results = run(args.size, args.rows, args.batch_size, args.max_length, args.rounds, args.threads)
    print(report(results, args.rows, args.size, args.batch_size, args.threads))


if __name__ == "__main__":
    run_stage(main)
