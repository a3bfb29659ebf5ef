"""Comparing torch and ONNX logits: statistics over non-pad tokens, the verdict per case, and the report.

Every case gates on finiteness and on every logit's value at the precision's tolerance. Label agreement is
judged where it can be measured: over the dataset rows' tokens pooled, and on a grid case (random token ids,
where a fine-tuned model is unsure) only over the tokens whose reference margin (top-1 minus top-2 logit)
exceeds what the tolerance lets both logits move, so that a flip there is a real error and not a near-tie.
On the rows, the candidate's spans must match the reference's (span F1) and, with gold annotations, its
entity F1 may fall at most `max_f1_drop` below the reference's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stages.core.params import Tolerance

ROWS_CASE = "rows"  # the dataset rows; the grid cases are named `grid BxL`
Pairs = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (reference logits, candidate logits, attention mask)


@dataclass(frozen=True)
class SpanQuality:
    """The rows' spans: the candidate's against the reference's, and each model's against gold (None without)."""

    span_f1: float
    entity_f1_reference: float | None
    entity_f1_candidate: float | None


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
    label_agreement: float  # over `agreement_tokens`: every token of the rows, a grid case's decisive tokens
    agreement_tokens: int
    nan_torch: int
    inf_torch: int
    nan_onnx: int
    inf_onnx: int
    pad_max_abs_diff: float  # reported, never gates
    span_f1: float | None  # the rows: the candidate's spans against the reference's
    entity_f1_reference: float | None  # the rows, with gold annotations
    entity_f1_candidate: float | None
    failed: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failed


def decisive(reference: np.ndarray, tolerance: Tolerance) -> np.ndarray:
    """Tokens whose label the tolerance protects: the reference's top-1 and top-2 logits are further apart than
    both may move (atol + rtol x |logit| each), so a flip there means a logit beyond tolerance, not a near-tie."""
    if reference.shape[-1] < 2:
        return np.ones(len(reference), dtype=bool)
    top = np.sort(reference, axis=-1)[:, -2:]
    movement = 2 * tolerance.atol + tolerance.rtol * np.abs(top).sum(axis=-1)
    return top[:, 1] - top[:, 0] > movement


def compare_case(
    name: str, pairs: Pairs, tolerance: Tolerance, spans: SpanQuality | None = None, pooled: bool = False
) -> CaseReport:
    """Compare (reference, candidate, attention_mask) batches; only positions where the mask is 1 count. Label
    agreement is `pooled` over every token (the dataset rows) or taken over the decisive tokens (a grid case)."""
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
    counted = np.ones(len(torch_real), dtype=bool) if pooled else decisive(np.where(finite, torch_real, 0.0), tolerance)
    same = np.argmax(torch_real, axis=-1) == np.argmax(onnx_real, axis=-1)
    agreement = float(np.mean(same[counted])) if counted.any() else 1.0
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
    if spans is not None and spans.span_f1 < 1 - tolerance.max_f1_drop:
        failed.append("span_f1")
    if (
        spans is not None
        and spans.entity_f1_candidate is not None
        and (spans.entity_f1_candidate < spans.entity_f1_reference - tolerance.max_f1_drop)
    ):
        failed.append("entity_f1")
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
        agreement_tokens=int(counted.sum()),
        pad_max_abs_diff=pad_max,
        span_f1=None if spans is None else spans.span_f1,
        entity_f1_reference=None if spans is None else spans.entity_f1_reference,
        entity_f1_candidate=None if spans is None else spans.entity_f1_candidate,
        failed=tuple(failed),
        **counts,
    )


def build_report(cases: list[CaseReport], tolerance: Tolerance, precision: str, provider: str) -> dict:
    """The metrics file: the verdict and its headline numbers, a few keys that `dvc exp show` lists per experiment."""
    failures = [f"{case.name}: {criterion}" for case in cases for criterion in case.failed]
    rows = next(case for case in cases if case.name == ROWS_CASE)
    report = {
        "passed": not failures,
        "max_abs_diff": max(case.max_abs_diff for case in cases),
        "label_agreement": min(case.label_agreement for case in cases),
        "rows_label_agreement": rows.label_agreement,
        "span_f1": rows.span_f1,
        "tokens": sum(case.tokens for case in cases),
        "precision": precision,
        "atol": tolerance.atol,
        "rtol": tolerance.rtol,
        "min_label_agreement": tolerance.min_label_agreement,
        "max_f1_drop": tolerance.max_f1_drop,
        "provider": provider,
        "failures": failures,
    }
    if rows.entity_f1_candidate is not None:
        report.update(entity_f1_torch=rows.entity_f1_reference, entity_f1_onnx=rows.entity_f1_candidate)
    return report


def case_details(cases: list[CaseReport]) -> dict:
    """Every case's statistics in full, for the file a user opens on purpose, and what each criterion counts."""
    return {"criteria": CRITERIA, **{case.name: {**asdict(case), "passed": case.passed} for case in cases}}


CRITERIA = {  # what each criterion counts, and why (parity_cases.json carries it, docs/int8.md explains it)
    "values": "every logit of every non-pad token within atol + rtol x |torch|, in every case",
    "finite": "no NaN or Inf on either side, in every case",
    "label_agreement": "rows: the share of all the rows' tokens (pooled) whose label is torch's; grid: the same share "
    "over the decisive tokens alone (agreement_tokens), those whose torch margin (top-1 minus top-2 logit) exceeds "
    "what the tolerance lets both logits move; random token ids leave a fine-tuned model unsure, and a near-tie "
    "flipped there is noise, not an error",
    "span_f1": "rows: F1 of the ONNX model's spans (exact boundaries and label) against torch's, at least 1 - max_f1_drop",
    "entity_f1": "rows with gold annotations: the ONNX model's entity F1 at most max_f1_drop below torch's",
}


def format_table(cases: list[CaseReport]) -> str:
    """One line per case: pass/fail, the criteria, and the numbers behind them."""
    lines = [
        f"{'case':<16} {'result':<6} {'tokens':>7} {'max_abs':>10} {'p99_abs':>10} {'min_atol':>10} {'agree':>8} "
        f"{'counted':>8} {'span_f1':>8} {'nan/inf':>8}  failed"
    ]
    for case in cases:
        bad_values = case.nan_onnx + case.inf_onnx + case.nan_torch + case.inf_torch
        span_f1 = "-" if case.span_f1 is None else f"{case.span_f1:.4f}"
        lines.append(
            f"{case.name:<16} {'PASS' if case.passed else 'FAIL':<6} {case.tokens:>7} {case.max_abs_diff:>10.2e} "
            f"{case.p99_abs_diff:>10.2e} {case.min_passing_atol:>10.2e} {case.label_agreement:>8.4f} "
            f"{case.agreement_tokens:>8} {span_f1:>8} {bad_values:>8}  " + (", ".join(case.failed) or "-")
        )
        if case.entity_f1_candidate is not None:
            lines.append(
                f"{'':<16} entity F1 against gold: torch {case.entity_f1_reference:.4f}, onnx {case.entity_f1_candidate:.4f}"
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
            counted = "tokens" if case.name == ROWS_CASE else "decisive tokens"
            lines.append(
                f"{case.name}: label agreement {case.label_agreement:.4f} over {case.agreement_tokens} {counted} < "
                f"{key}.min_label_agreement {tolerance.min_label_agreement:g}"
                + (
                    f" (one token is {1 / case.agreement_tokens:.2g} of them: raise parity.samples for a finer measure)"
                    if case.name == ROWS_CASE and case.agreement_tokens * (1 - tolerance.min_label_agreement) < 10
                    else ""
                )
            )
        if "span_f1" in case.failed:
            lines.append(
                f"{case.name}: span F1 against torch's spans {case.span_f1:.4f} < 1 - {key}.max_f1_drop "
                f"{tolerance.max_f1_drop:g}"
            )
        if "entity_f1" in case.failed:
            lines.append(
                f"{case.name}: entity F1 against gold {case.entity_f1_candidate:.4f}, torch's {case.entity_f1_reference:.4f}: "
                f"it falls more than {key}.max_f1_drop {tolerance.max_f1_drop:g}"
            )
        if "finite" in case.failed:
            lines.append(
                f"{case.name}: NaN/Inf in outputs (onnx: {case.nan_onnx} NaN, {case.inf_onnx} Inf; "
                f"torch: {case.nan_torch} NaN, {case.inf_torch} Inf)"
            )
    fix = (
        "Serve it at f32 (runtime.openvino_precision: f32, or runtime.backend: onnxruntime)"
        if precision == "bf16"
        else "Fix the export (try export.exporter, export.opset or export.precision)"
    )
    lines.append(
        f"The {precision} model was checked. {fix}, or, if the differences are acceptable for how you serve, "
        f"loosen {key}.atol / {key}.rtol / {key}.min_label_agreement / {key}.max_f1_drop."
    )
    return "\n".join(lines)
