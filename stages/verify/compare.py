"""Comparing torch and ONNX logits: statistics over non-pad tokens, the verdict per case, and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stages.core.params import Tolerance

ROWS_CASE = "rows"  # the dataset rows; the grid cases are named `grid BxL`


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
    tokens_over_tolerance: int  # tokens with any logit where |onnx - torch| > atol + rtol * |torch|
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
    over = int(np.count_nonzero((excess > tolerance.atol).any(axis=-1)))
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
        tokens_over_tolerance=over,
        label_agreement=agreement,
        pad_max_abs_diff=pad_max,
        failed=tuple(failed),
        **counts,
    )


def build_report(cases: list[CaseReport], tolerance: Tolerance, precision: str, provider: str) -> dict:
    """The metrics file: the verdict and its headline numbers, a few keys that `dvc exp show` lists per variant."""
    failures = [f"{case.name}: {criterion}" for case in cases for criterion in case.failed]
    return {
        "passed": not failures,
        "max_abs_diff": max(case.max_abs_diff for case in cases),
        "label_agreement": min(case.label_agreement for case in cases),
        "rows_label_agreement": next(case.label_agreement for case in cases if case.name == ROWS_CASE),
        "tokens": sum(case.tokens for case in cases),
        "precision": precision,
        "atol": tolerance.atol,
        "rtol": tolerance.rtol,
        "min_label_agreement": tolerance.min_label_agreement,
        "provider": provider,
        "failures": failures,
    }


def case_details(cases: list[CaseReport]) -> dict:
    """Every case's statistics in full, for the file a user opens on purpose."""
    return {case.name: {**asdict(case), "passed": case.passed} for case in cases}


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
                f"{case.name}: {case.tokens_over_tolerance} of {case.tokens} tokens have logits beyond "
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
