"""`runtime.backend: auto`: the runtime that serves an export fastest on this CPU, chosen by measuring, not guessing.

The export stage runs each candidate (onnxruntime at the export's precision; OpenVINO at its precision for this
CPU, bf16 where its plugin reports BF16) on the parity rows, in the gate's length-sorted batches, in alternating
rounds after a warm-up batch, and keeps the fastest. onnxruntime stays unless another is at least `MARGIN`
faster, so that two close measurements do not flip the choice (and the export) between runs. The choice and its
evidence go into `model.json` (`serving`), which `parity` gates and `infer` serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.cpu import describe_cpu
from stages.core.errors import UserError
from stages.core.params import Params
from stages.graph.runners import Runner, Serving, load_runner, openvino_precisions, openvino_serving
from stages.scoring.batching import pad_batch, plan_batches
from stages.scoring.tokens import TextTokenizer
from stages.scoring.windows import make_windows

log = logging.getLogger(__name__)

ROUNDS = 2  # timed rounds per candidate, taking turns; the best counts
MARGIN = 1.05  # another runtime replaces onnxruntime only when at least this much faster
Batches = list[dict[str, np.ndarray]]


def row_batches(texts: Sequence[str], onnx_dir: Path, params: Params, max_length: int, side: str) -> Batches:
    """`texts` tokenised and windowed as `infer` does, in the gate's length-sorted batches (`parity.batch_size`)."""
    tokenizer = TextTokenizer.load(onnx_dir)
    framing = tokenizer.framing(max_length, side)
    windows = make_windows(tokenizer.encode(list(texts)), framing, params.infer.long_text, params.infer.stride)
    size = params.parity.batch_size
    plan = plan_batches([len(window) for window in windows], size, size * max_length)
    return [pad_batch([windows[index].input_ids for index in indices], tokenizer.pad_id) for indices in plan]


def candidates(export_precision: str, params: Params) -> tuple[list[Serving], dict[str, str]]:
    """What may serve this export here, and why any other may not."""
    servings, left_out = [Serving("onnxruntime", export_precision)], {}
    if export_precision == "fp16":
        left_out["openvino"] = "fp16 exports are for CUDA"
    elif not openvino_precisions():
        left_out["openvino"] = "openvino is not installed (pip install -e '.[openvino]')"
    else:
        servings.append(openvino_serving(export_precision, params.runtime))
    return servings, left_out


def time_runs(runners: dict[str, Runner], batches: Batches) -> dict[str, float]:
    """Each runner's best seconds over `batches`, in rounds that take turns, after one warm-up batch each."""
    for runner in runners.values():
        runner.logits(batches[0])
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(ROUNDS):
        for name, runner in runners.items():
            started = time.perf_counter()
            for arrays in batches:
                runner.logits(arrays)
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def choose_serving(path: Path, export_precision: str, batches: Batches, params: Params) -> dict[str, Any]:
    """Measure each candidate serving the model at `path` on `batches`; the choice with its evidence."""
    servings, left_out = candidates(export_precision, params)
    runners = {}
    for serving in servings:
        name = f"{serving.backend} {serving.precision}"
        try:
            runners[name] = (serving, load_runner(path, serving, params.runtime))
        except UserError as error:
            left_out[serving.backend] = str(error)
    seconds = time_runs({name: runner for name, (_, runner) in runners.items()}, batches)
    baseline = f"onnxruntime {export_precision}"
    fastest = min(seconds, key=seconds.get)
    name = fastest if seconds[baseline] >= MARGIN * seconds[fastest] else baseline
    serving, runner = runners[name]
    texts = sum(len(arrays["input_ids"]) for arrays in batches)
    log.info(
        "runtime.backend = auto: %s serves fastest here (%s)",
        name,
        ", ".join(f"{other} {texts / value:.1f} texts/s" for other, value in seconds.items()),
    )
    return {
        "backend": serving.backend,
        "precision": serving.precision,
        "provider": runner.provider,
        "cpu": describe_cpu(),
        "measured_texts_per_s": {other: round(texts / value, 2) for other, value in seconds.items()},
        "rows": texts,
        "rule": f"fastest of {ROUNDS} alternating rounds on the parity rows; onnxruntime unless another is "
        f">= {MARGIN}x faster",
        "left_out": left_out,
    }


def serving_chooser(params: Params, texts: Sequence[str]) -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
    """The export stage's chooser: given the staged model file and its metadata, `choose_serving` on `texts`."""

    def choose(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
        side = metadata["truncation_side"]
        batches = row_batches(texts, path.parent, params, int(metadata["max_length"]), side)
        return choose_serving(path, metadata["precision"], batches, params)

    return choose
