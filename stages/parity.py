"""Stage `parity`: does the ONNX model compute what the torch model computes? A failure stops the pipeline.

Compared on (a) dataset rows tokenised exactly as `infer` tokenises them, batched with real padding,
and (b) a grid of batch sizes x sequence lengths away from the export dummy. Statistics cover
non-pad tokens only; pad positions are reported apart and never gate. The ONNX side runs with the
session options and provider `infer` uses (TF32 off on CUDA: this is an fp32 check).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

from stages.atomic import write_json
from stages.dataset import iter_chunks
from stages.encoding import Framing, encode_texts, make_windows, pad_batch, plan_batches
from stages.errors import CheckFailed, UserError, run_stage
from stages.model import CustomModel, HeadSpec, load_model_dir, torch_logits
from stages.params import Params, ParityParams, Tolerance, load_params
from stages.runtime import ONNX_FILE, SIDECAR_FILE, create_session, onnx_logits, provider_of

log = logging.getLogger(__name__)

HISTOGRAM_FLOOR = 1e-10  # diffs below land in the lowest bin
SAMPLE_POOL_FACTOR = 10  # rows sampled from the first SAMPLE_POOL_FACTOR x parity.samples of the dataset


@dataclass(frozen=True)
class CaseReport:
    """Statistics of one compared case over its non-pad tokens, and which criteria it fails."""

    name: str
    batches: int
    tokens: int
    max_abs_diff: float
    mean_abs_diff: float
    p99_abs_diff: float
    max_rel_diff: float
    min_passing_atol: float  # the smallest atol that would pass at the configured rtol
    over_tolerance: int  # elements with |onnx - torch| > atol + rtol * |torch|
    label_agreement: float
    nan_torch: int
    inf_torch: int
    nan_onnx: int
    inf_onnx: int
    pad_max_abs_diff: float  # reported, never gates
    failed: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failed


def compare_case(name: str, pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], tolerance: Tolerance) -> CaseReport:
    """Compare (torch, onnx, attention_mask) batches; only positions where the mask is 1 count."""
    torch_real = np.concatenate([reference[mask.astype(bool)] for reference, _, mask in pairs])
    onnx_real = np.concatenate([candidate[mask.astype(bool)] for _, candidate, mask in pairs])
    pad_diffs = [
        np.abs(candidate[~mask.astype(bool)] - reference[~mask.astype(bool)]) for reference, candidate, mask in pairs
    ]
    pad_max = max((float(np.nanmax(diff)) for diff in pad_diffs if diff.size), default=0.0)
    finite = np.isfinite(torch_real) & np.isfinite(onnx_real)
    diff = np.where(finite, np.abs(onnx_real - torch_real), 0.0)
    magnitude = np.where(finite, np.abs(torch_real), 0.0)
    excess = diff - tolerance.rtol * magnitude
    over = int(np.count_nonzero(excess > tolerance.atol))
    agreement = (
        float(np.mean(np.argmax(torch_real, axis=-1) == np.argmax(onnx_real, axis=-1))) if len(torch_real) else 1.0
    )
    counts = {
        "nan_torch": int(np.isnan(torch_real).sum()),
        "inf_torch": int(np.isinf(torch_real).sum()),
        "nan_onnx": int(np.isnan(onnx_real).sum()),
        "inf_onnx": int(np.isinf(onnx_real).sum()),
    }
    failed = []
    if over:
        failed.append("values")
    if agreement < tolerance.min_label_agreement:
        failed.append("label_agreement")
    if any(counts.values()):
        failed.append("finite")
    return CaseReport(
        name=name,
        batches=len(pairs),
        tokens=len(torch_real),
        max_abs_diff=float(diff.max(initial=0.0)),
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        p99_abs_diff=float(np.percentile(diff, 99)) if diff.size else 0.0,
        max_rel_diff=float((diff / np.maximum(magnitude, np.finfo(np.float32).tiny)).max(initial=0.0)),
        min_passing_atol=float(max(excess.max(initial=0.0), 0.0)),
        over_tolerance=over,
        label_agreement=agreement,
        pad_max_abs_diff=pad_max,
        failed=tuple(failed),
        **counts,
    )


def run_pairs(
    model: CustomModel, session: ort.InferenceSession, batches: Iterator[dict[str, np.ndarray]]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Torch and ONNX logits for each batch, with the batch's attention mask."""
    return [(torch_logits(model, arrays), onnx_logits(session, arrays), arrays["attention_mask"]) for arrays in batches]


def sample_texts(params: Params) -> list[str]:
    """`parity.samples` texts drawn with `parity.seed` from the start of the dataset."""
    pool_size = SAMPLE_POOL_FACTOR * params.parity.samples
    chunks = iter_chunks(Path(params.infer.input), params.infer.text_column, params.infer.id_column, pool_size)
    pool = next(chunks, None)
    if pool is None:
        raise UserError(f"dataset {params.infer.input} has no rows to compare on (infer.input)")
    rng = np.random.default_rng(params.parity.seed)
    chosen = rng.choice(len(pool.texts), size=min(params.parity.samples, len(pool.texts)), replace=False)
    return [pool.texts[index] for index in sorted(chosen)]


def dataset_batches(texts: list[str], tokenizer, spec: HeadSpec, params: Params) -> Iterator[dict[str, np.ndarray]]:
    """Dataset rows tokenised and windowed as `infer` does, in length-sorted batches with real padding."""
    framing = Framing.of(tokenizer, spec.max_length)
    windows = make_windows(encode_texts(tokenizer, texts), framing, params.infer.long_text, params.infer.stride)
    batch_size = params.parity.batch_size
    for indices in plan_batches([len(window) for window in windows], batch_size, batch_size * spec.max_length):
        yield pad_batch([windows[index] for index in indices], tokenizer.pad_token_id)


def grid_batch(batch_size: int, length: int, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """Random tokens of one grid shape; row i keeps its first length - i*length/batch tokens (row 0 full)."""
    rng = np.random.default_rng(seed)
    attention_mask = np.zeros((batch_size, length), dtype=np.int64)
    for row in range(batch_size):
        attention_mask[row, : max(1, length - row * length // batch_size)] = 1
    return {
        "input_ids": rng.integers(0, vocab_size, (batch_size, length)),
        "attention_mask": attention_mask,
        "token_type_ids": rng.integers(0, 2, (batch_size, length)) * attention_mask,
    }


def grid_shapes(parity: ParityParams, max_length: int) -> list[tuple[int, int]]:
    """The batch x length grid, lengths capped at the model's max_length."""
    lengths = sorted({min(length, max_length) for length in parity.grid_lengths})
    return [(batch, length) for batch in parity.grid_batch_sizes for length in lengths]


Pairs = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def check_parity(
    model: CustomModel,
    session: ort.InferenceSession,
    tokenizer,
    spec: HeadSpec,
    params: Params,
    texts: list[str],
    tolerance: Tolerance,
) -> tuple[list[CaseReport], Pairs]:
    """Every case (the dataset rows, then each grid shape), and all compared batches for the plots."""
    rows = run_pairs(model, session, dataset_batches(texts, tokenizer, spec, params))
    cases = [compare_case("rows", rows, tolerance)]
    compared = list(rows)
    for index, (batch, length) in enumerate(grid_shapes(params.parity, spec.max_length)):
        arrays = grid_batch(batch, length, model.config.vocab_size, params.parity.seed + index)
        pairs = run_pairs(model, session, iter([arrays]))
        cases.append(compare_case(f"grid {batch}x{length}", pairs, tolerance))
        compared.extend(pairs)
    return cases, compared


def plot_data(compared: Pairs) -> dict[str, list[dict]]:
    """For `dvc plots`: max abs diff per padded sequence length, and a log10 histogram of token diffs."""
    by_length: dict[int, float] = {}
    diffs = []
    for reference, candidate, mask in compared:
        real = mask.astype(bool)
        diff = np.abs(candidate[real] - reference[real]).max(axis=-1)
        diff = diff[np.isfinite(diff)]
        diffs.append(diff)
        length = reference.shape[1]
        by_length[length] = max(by_length.get(length, 0.0), float(diff.max(initial=0.0)))
    exponents = np.floor(np.log10(np.maximum(np.concatenate(diffs), HISTOGRAM_FLOOR))).astype(int)
    values, counts = np.unique(exponents, return_counts=True)
    return {
        "max_diff_by_length.json": [
            {"length": length, "max_abs_diff": by_length[length]} for length in sorted(by_length)
        ],
        "diff_histogram.json": [
            {"log10_abs_diff": int(value), "tokens": int(count)} for value, count in zip(values, counts, strict=True)
        ],
    }


def build_report(cases: list[CaseReport], tolerance: Tolerance, precision: str, provider: str) -> dict:
    """The metrics file: the contract's headline keys, then every case in full."""
    failures = [f"{case.name}: {criterion}" for case in cases for criterion in case.failed]
    return {
        "passed": not failures,
        "max_abs_diff": max(case.max_abs_diff for case in cases),
        "label_agreement": min(case.label_agreement for case in cases),
        "tokens": sum(case.tokens for case in cases),
        "precision": precision,
        "atol": tolerance.atol,
        "rtol": tolerance.rtol,
        "min_label_agreement": tolerance.min_label_agreement,
        "provider": provider,
        "failures": failures,
        "cases": {case.name: {**asdict(case), "passed": case.passed} for case in cases},
    }


def format_table(cases: list[CaseReport]) -> str:
    """One line per case: pass/fail, the criteria, and the numbers behind them."""
    lines = [
        f"{'case':<16} {'result':<6} {'tokens':>7} {'max_abs':>10} {'p99_abs':>10} {'min_atol':>10} {'agree':>8} {'nan/inf':>8}  failed"
    ]
    for case in cases:
        bad_values = case.nan_onnx + case.inf_onnx + case.nan_torch + case.inf_torch
        lines.append(
            f"{case.name:<16} {'PASS' if case.passed else 'FAIL':<6} {case.tokens:>7} {case.max_abs_diff:>10.2e} "
            f"{case.p99_abs_diff:>10.2e} {case.min_passing_atol:>10.2e} {case.label_agreement:>8.4f} {bad_values:>8}  "
            + (", ".join(case.failed) or "-")
        )
    return "\n".join(lines)


def explain_failure(cases: list[CaseReport], tolerance: Tolerance, precision: str) -> str:
    """Which criterion failed, by how much, at which case, and what to change."""
    key = "parity" if precision == "fp32" else f"parity.{precision}"
    lines = []
    for case in cases:
        if "values" in case.failed:
            lines.append(
                f"{case.name}: {case.over_tolerance} of {case.tokens} tokens' logits exceed "
                f"atol {tolerance.atol:g} + rtol {tolerance.rtol:g} x |torch| (max abs diff {case.max_abs_diff:.3g}; "
                f"{key}.atol would need >= {case.min_passing_atol:.3g})"
            )
        if "label_agreement" in case.failed:
            lines.append(
                f"{case.name}: label agreement {case.label_agreement:.4f} < {key}.min_label_agreement "
                f"{tolerance.min_label_agreement:g}"
            )
        if "finite" in case.failed:
            lines.append(
                f"{case.name}: NaN/Inf in outputs (onnx: {case.nan_onnx} NaN, {case.inf_onnx} Inf; "
                f"torch: {case.nan_torch} NaN, {case.inf_torch} Inf)"
            )
    lines.append(
        f"The {precision} model was checked. Fix the export (try export.exporter, export.opset or export.precision), "
        f"or, if the differences are acceptable for how you serve, loosen {key}.atol / {key}.rtol / "
        f"{key}.min_label_agreement."
    )
    return "\n".join(lines)


def check_compatible(spec: HeadSpec, session: ort.InferenceSession, onnx_dir: Path) -> None:
    """The ONNX model must take the torch model's inputs and give its label count, else one clear error."""
    graph_inputs = [(value.name, len(value.shape)) for value in session.get_inputs()]
    graph_outputs = [(value.name, value.shape) for value in session.get_outputs()]
    problems = []
    if sorted(name for name, _ in graph_inputs) != sorted(spec.input_names) or any(
        rank != 2 for _, rank in graph_inputs
    ):
        problems.append(f"inputs: onnx {graph_inputs} vs torch {[(name, 2) for name in spec.input_names]}")
    if len(graph_outputs) != 1 or len(graph_outputs[0][1]) != 3 or graph_outputs[0][1][2] != spec.num_labels:
        problems.append(
            f"outputs: onnx {graph_outputs} vs torch [('logits', ['batch', 'sequence', {spec.num_labels}])]"
        )
    if problems:
        raise UserError(
            f"{onnx_dir / ONNX_FILE} does not match the torch model in the normalised model directory:\n  "
            + "\n  ".join(problems)
            + "\nRun the export stage again."
        )


def main() -> None:
    params = load_params()
    model_dir, onnx_dir = Path(params.model.output), Path(params.export.output)
    for directory, file in ((model_dir, "head.json"), (onnx_dir, SIDECAR_FILE)):
        if not (directory / file).is_file():
            raise UserError(f"{directory / file} not found; run `dvc repro` so the earlier stages write it")
    model, spec = load_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(onnx_dir, local_files_only=True)
    session = create_session(onnx_dir / ONNX_FILE, params.runtime, tf32=False)
    check_compatible(spec, session, onnx_dir)
    precision = json.loads((onnx_dir / SIDECAR_FILE).read_text(encoding="utf-8"))["precision"]
    tolerance = params.parity.tolerance(precision)
    texts = sample_texts(params)
    cases, compared = check_parity(model, session, tokenizer, spec, params, texts, tolerance)
    report = build_report(cases, tolerance, precision, provider_of(session))
    write_json(Path(params.parity.report), report)
    for name, rows in plot_data(compared).items():
        write_json(Path(params.parity.plots) / name, rows)
    print(format_table(cases), file=sys.stderr)
    if not report["passed"]:
        raise CheckFailed(
            "parity failed, so the pipeline stops before infer:\n" + explain_failure(cases, tolerance, precision)
        )
    log.info(
        "parity passed for the %s model on %d cases, %d tokens, max abs diff %.2e",
        precision,
        len(cases),
        report["tokens"],
        report["max_abs_diff"],
    )


if __name__ == "__main__":
    run_stage(main)
