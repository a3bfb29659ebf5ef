"""`runtime.backend: auto`: the runtime that serves an export fastest on this CPU, chosen by measuring, not guessing.

The export stage runs each candidate (onnxruntime at the export's precision; OpenVINO at its precision for this
CPU, bf16 where its plugin reports BF16) on the parity rows, in the gate's length-sorted batches, in alternating
rounds after a warm-up batch, and keeps the fastest. A candidate other than onnxruntime at the export's precision
(which `parity` gates) is first judged as the gate will judge it, against torch on the gate's rows and grid at its
served precision's tolerance; one that fails is left out, with the reason, so that `auto` never picks what
`parity` then refuses. onnxruntime stays unless another is at least `MARGIN` faster, so that two close
measurements do not flip the choice (and the export) between runs. The choice and its evidence go into
`model.json` (`serving`), which `parity` gates and `infer` serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.cpu import describe_cpu
from stages.core.errors import UserError
from stages.core.params import Params
from stages.graph.runners import Runner, Serving, load_runner, openvino_precisions, openvino_serving
from stages.model.directory import load_model_dir
from stages.model.token_model import torch_logits
from stages.scoring.decoding import crf_beside
from stages.scoring.tokens import TextTokenizer
from stages.verify.cases import GateInputs, SampledRows, gate_inputs
from stages.verify.explain import explain_failure

log = logging.getLogger(__name__)

ROUNDS = 2  # timed rounds per candidate, taking turns; the best counts
MARGIN = 1.05  # another runtime replaces onnxruntime only when at least this much faster
Batches = list[dict[str, np.ndarray]]
Reference = Callable[[], list[list[np.ndarray]]]  # torch's logits on the gate's inputs, computed when first needed


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


def gate_failure(serving: Serving, runner: Runner, inputs: GateInputs, reference: list, params: Params) -> str | None:
    """Why `runner` would fail the parity gate at its served precision (the first failing criterion), or None."""
    tolerance = params.parity.tolerance(serving.precision)
    cases = inputs.judge(reference, inputs.run(runner.logits), tolerance)
    if all(case.passed for case in cases):
        return None
    return (
        f"fails the parity gate at {serving.precision}: "
        + explain_failure(cases, tolerance, serving.precision).split("\n")[0]
    )


def choose_serving(
    path: Path, export_precision: str, inputs: GateInputs, reference: Reference, params: Params
) -> dict[str, Any]:
    """Measure each candidate serving the model at `path` on the gate's rows, those other than onnxruntime at the
    export's precision once they pass the gate; the choice with its evidence."""
    servings, left_out = candidates(export_precision, params)
    baseline = f"onnxruntime {export_precision}"
    runners, truth = {}, None
    for serving in servings:
        name = f"{serving.backend} {serving.precision}"
        try:
            runner = load_runner(path, serving, params.runtime)
        except UserError as error:
            left_out[serving.backend] = str(error)
            continue
        if name != baseline:
            truth = truth if truth is not None else reference()
            if (failure := gate_failure(serving, runner, inputs, truth, params)) is not None:
                log.info("runtime.backend = auto: %s left out, it %s", name, failure)
                left_out[serving.backend] = failure
                continue
        runners[name] = (serving, runner)
    batches = inputs.rows.arrays
    seconds = time_runs({name: runner for name, (_, runner) in runners.items()}, batches)
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
        "rule": f"fastest of {ROUNDS} alternating rounds on the parity rows, among those that pass the parity gate; "
        f"onnxruntime unless another is >= {MARGIN}x faster",
        "left_out": left_out,
    }


def serving_chooser(
    params: Params, model_dir: Path, sampled: SampledRows
) -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
    """The export stage's chooser: given the staged model file and its metadata, `choose_serving` on the gate's
    inputs (`sampled` rows tokenised as `infer` does, and the grid), torch's logits from `model_dir` as reference."""

    def choose(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
        model, spec = load_model_dir(model_dir)
        tokenizer = TextTokenizer.load(path.parent)
        framing = tokenizer.framing(int(metadata["max_length"]), metadata["truncation_side"])
        inputs = gate_inputs(
            sampled, tokenizer, framing, spec, model.config.vocab_size, params, crf_beside(path.parent)
        )
        return choose_serving(
            path, metadata["precision"], inputs, lambda: inputs.run(lambda arrays: torch_logits(model, arrays)), params
        )

    return choose
