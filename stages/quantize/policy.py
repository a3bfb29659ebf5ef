"""Accuracy-aware int8: how the weight MatMuls are quantized, chosen on the parity gate's own inputs and tolerance.

The gate's inputs are the sampled rows of `parity.input` (tokenised and windowed as `infer` does) and the grid of
shapes; its tolerance is `parity.int8` (label agreement pooled over the rows, their spans, entity F1 with gold, and
values everywhere); the reference is the fp32 ONNX model, which matches torch to ~1e-5. The search stops at the
first mix the gate accepts.
Each trial quantizes, runs every input and judges as the gate does; the first that passes is exported:

1. full int8, every weight MatMul and the word embedding quantized;
2. full int8 after SmoothQuant-style scale migration (`stages.quantize.smoothing`, ranges calibrated on the rows)
   at the weight MatMul inputs where it divides the simulated int8 error at least twice: fp32 is unchanged,
   and outlier channels no longer cost the other channels their resolution;
3. float fallback, on whichever of the two graphs came closer: the head and the word embedding stay float
   (the head does little work, the embedding is a lookup), then the weight MatMuls with the largest simulated
   int8 error on the rows are kept float too, in growing groups (1, 2, 4, ...) until the gate passes, within
   `export.int8_max_float_share` of the weight MatMuls' work; the last group is bisected; last, the word
   embedding and then the head are quantized again wherever the gate still passes.

Nothing passing within the bound fails the export in one line that says how close the best trial came.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from stages.core.errors import CheckFailed
from stages.core.params import Params
from stages.graph.precision import Int8Mixer
from stages.model.directory import CONFIG_FILE, HEAD_FILE, HeadSpec
from stages.quantize.sensitivity import simulated_int8_errors
from stages.quantize.trials import PLAIN, SMOOTHED, MixSearch, Trial
from stages.scoring.decoding import crf_beside
from stages.scoring.tokens import TextTokenizer
from stages.verify.cases import gate_inputs, sample_rows


def accuracy_aware_int8(params: Params, model_dir: Path) -> Int8Mixer:
    """The export stage's int8 mixer for the normalised model in `model_dir`, judged as `params` has the gate."""

    def mix(prepared: Path, exported: Path, target: str) -> dict[str, Any]:
        started = time.perf_counter()
        spec = HeadSpec.from_file(model_dir / HEAD_FILE)
        tokenizer = TextTokenizer.load(model_dir)
        framing = tokenizer.framing(spec.max_length, spec.truncation_side)
        vocab_size = int(json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))["vocab_size"])
        crf = crf_beside(exported.parent)  # a CRF head's, written beside the graph
        inputs = gate_inputs(sample_rows(params), tokenizer, framing, spec, vocab_size, params, crf)
        search = MixSearch.start(prepared, exported, target, inputs, params)
        chosen, reasons = choose_mix(search)
        chosen.path.replace(exported)
        return search.report(chosen, reasons, time.perf_counter() - started)

    return mix


def choose_mix(search: MixSearch) -> tuple[Trial, dict[str, str]]:
    """The first trial that passes the gate, and why each node it keeps float stayed float."""
    full = search.trial(())
    if full.passed:
        return full, {}
    if not search.smooth():
        return fall_back(search, PLAIN)
    smoothed = search.trial((), SMOOTHED)
    if smoothed.passed:
        return smoothed, {}
    closer = max((full, smoothed), key=lambda trial: (trial.label_agreement, -trial.max_abs_diff))
    return fall_back(search, closer.graph)


def fall_back(search: MixSearch, graph: str) -> tuple[Trial, dict[str, str]]:
    """Keep the head, the word embedding and the MatMuls int8 costs most float, as few as pass the gate."""
    matmuls = search.matmuls_in(graph)
    (errors,) = simulated_int8_errors(
        search.graphs[graph], matmuls, search.calibration_rows(), search.runtime, search.target
    )
    ranked = sorted((matmul for matmul in matmuls if not matmul.is_head), key=lambda matmul: -errors[matmul.node])
    head_and_embedding = tuple(node for node in (search.head, search.embedding) if node)

    def kept(length: int) -> tuple[str, ...]:
        return head_and_embedding + tuple(matmul.node for matmul in ranked[:length])

    within = [length for length in range(len(ranked) + 1) if search.share(kept(length)) <= search.bound]
    failed, passing = -1, None
    for length in sorted({*(length for length in growing(len(ranked)) if length < len(within)), *within[-1:]}):
        trial = search.trial(kept(length), graph)
        if trial.passed:
            passing = (length, trial)
            break
        failed = length
    if passing is None:
        raise CheckFailed(search.no_mix_message())
    length, chosen = passing
    while length - failed > 1:  # bisect: the shortest prefix of the ranking that passes
        middle = (failed + length) // 2
        trial = search.trial(kept(middle), graph)
        length, chosen, failed = (middle, trial, failed) if trial.passed else (length, chosen, middle)
    reasons = {
        matmul.node: f"ranked {rank + 1} of {len(ranked)} by simulated int8 error ({errors[matmul.node]:.1%} of its "
        f"output); with only the first {length - 1} of the ranking float the gate fails"
        for rank, matmul in enumerate(ranked[:length])
    }
    for node in head_and_embedding:  # quantized again where the gate still passes
        trial = search.trial(tuple(name for name in chosen.floats if name != node), graph)
        if trial.passed:
            chosen = trial
        else:
            reasons[node] = f"quantizing it too fails the gate (label agreement {trial.label_agreement:.4f})"
    return chosen, reasons


def growing(count: int) -> list[int]:
    """0, 1, 2, 4, ... and `count`: how many of the ranked MatMuls each growing group keeps float."""
    lengths, length = [0], 1
    while length < count:
        lengths.append(length)
        length *= 2
    return [*lengths, count] if count else lengths
