"""What a user reads of the gate's verdict: one line per case, a failed criterion in a few words, and a failure
explained (by how much, at which case, what to change)."""

from __future__ import annotations

from stages.core.params import Tolerance
from stages.verify.compare import ROWS_CASE, CaseReport

LABEL_CRITERIA = ("label_agreement", "span_f1", "entity_f1", "decoded_labels")  # labels, spans, entities


def shortfalls(cases: list[CaseReport], tolerance: Tolerance) -> str:
    """Each failed criterion in a few words, the measured numbers against what passes; the grid's values once, as
    they are judged: its tokens pooled against one allowance."""
    parts = []
    for criterion in ("values", *LABEL_CRITERIA, "finite"):
        failed = [case for case in cases if criterion in case.failed]
        if criterion == "values":
            parts += [values_shortfall(group) for group in grouped_values(failed, cases)]
        elif failed:
            parts.append(
                f"{CRITERION_WORDS[criterion]} ({', '.join(measured(case, criterion, tolerance) for case in failed)})"
            )
    return "; ".join(parts)


def grouped_values(failed: list[CaseReport], cases: list[CaseReport]) -> list[list[CaseReport]]:
    """The rows case on its own; the grid's cases as one group, all of them, when its pooled count failed."""
    rows = [[case] for case in failed if case.name == ROWS_CASE]
    grid = [case for case in cases if case.name != ROWS_CASE]
    return rows + ([grid] if any(case.name != ROWS_CASE for case in failed) else [])


def values_shortfall(group: list[CaseReport]) -> str:
    worst = max(group, key=lambda case: case.max_abs_diff)
    name = group[0].name if group[0].name == ROWS_CASE else "the grid pooled"
    return (
        f"values ({name}: {sum(case.tokens_over_tolerance for case in group)} of {sum(case.tokens for case in group)} "
        f"tokens beyond tolerance, {group[0].tokens_over_allowed} allowed; max |diff| {worst.max_abs_diff:.3g} in "
        f"{worst.name})"
    )


CRITERION_WORDS = {
    "label_agreement": "label agreement",
    "span_f1": "span F1",
    "entity_f1": "entity F1",
    "decoded_labels": "CRF-decoded labels",
    "finite": "finite",
}


def measured(case: CaseReport, criterion: str, tolerance: Tolerance) -> str:
    """A case's number for a failed criterion against what passes."""
    if criterion == "label_agreement":
        return f"{case.name} {case.label_agreement:.4f} < {tolerance.min_label_agreement:g}"
    if criterion == "span_f1":
        return f"{case.name} {case.span_f1:.4f} < {1 - tolerance.max_f1_drop:g}"
    if criterion == "entity_f1":
        return f"{case.name} {case.entity_f1_candidate:.4f}, torch {case.entity_f1_reference:.4f}"
    if criterion == "decoded_labels":
        return f"{case.name} {case.decoded_label_agreement:.4f} < {tolerance.min_label_agreement:g}"
    return f"{case.name} {case.nan_onnx + case.nan_torch} NaN, {case.inf_onnx + case.inf_torch} Inf"


def pooling(case: CaseReport) -> str:
    """How a case's allowance of outliers was counted: its own tokens (the rows), or the grid's pooled."""
    return "" if case.name == ROWS_CASE else " over the grid's tokens pooled"


def labels_pass(cases: list[CaseReport]) -> bool:
    """Whether the label criteria alone (agreement, spans, entity F1) pass in every case."""
    return not any(criterion in LABEL_CRITERIA for case in cases for criterion in case.failed)


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


def values_line(case: CaseReport, tolerance: Tolerance, key: str) -> str:
    allowed = (
        f", {case.tokens_over_allowed} allowed by {key}.outlier_share{pooling(case)}" if tolerance.outlier_share else ""
    )
    return (
        f"{case.name}: {case.tokens_over_tolerance} of {case.tokens} tokens have logits beyond "
        f"atol {tolerance.atol:g} + rtol {tolerance.rtol:g} x |torch|{allowed} (max abs diff "
        f"{case.max_abs_diff:.3g}; {key}.atol would need >= {case.min_passing_atol:.3g})"
    )


def agreement_line(case: CaseReport, tolerance: Tolerance, key: str) -> str:
    counted = "tokens" if case.name == ROWS_CASE else "decisive tokens"
    coarse = case.name == ROWS_CASE and case.agreement_tokens * (1 - tolerance.min_label_agreement) < 10
    return (
        f"{case.name}: label agreement {case.label_agreement:.4f} over {case.agreement_tokens} {counted} < "
        f"{key}.min_label_agreement {tolerance.min_label_agreement:g}"
        + (
            f" (one token is {1 / case.agreement_tokens:.2g} of them: raise parity.samples for a finer measure)"
            if coarse
            else ""
        )
    )


def span_line(case: CaseReport, tolerance: Tolerance, key: str) -> str:
    return f"{case.name}: span F1 against torch's spans {case.span_f1:.4f} < 1 - {key}.max_f1_drop {tolerance.max_f1_drop:g}"


def entity_line(case: CaseReport, tolerance: Tolerance, key: str) -> str:
    return (
        f"{case.name}: entity F1 against gold {case.entity_f1_candidate:.4f}, torch's {case.entity_f1_reference:.4f}: "
        f"it falls more than {key}.max_f1_drop {tolerance.max_f1_drop:g}"
    )


def decoded_line(case: CaseReport, tolerance: Tolerance, key: str) -> str:
    return (
        f"{case.name}: the CRF-decoded labels agree with torch's on {case.decoded_label_agreement:.4f} of the "
        f"tokens < {key}.min_label_agreement {tolerance.min_label_agreement:g}"
    )


def finite_line(case: CaseReport, tolerance: Tolerance, key: str) -> str:
    return (
        f"{case.name}: NaN/Inf in outputs (onnx: {case.nan_onnx} NaN, {case.inf_onnx} Inf; "
        f"torch: {case.nan_torch} NaN, {case.inf_torch} Inf)"
    )


EXPLAINED = {  # each failed criterion of a case, explained in this order
    "values": values_line,
    "label_agreement": agreement_line,
    "span_f1": span_line,
    "entity_f1": entity_line,
    "decoded_labels": decoded_line,
    "finite": finite_line,
}


def explain_failure(cases: list[CaseReport], tolerance: Tolerance, precision: str) -> str:
    """Which criterion failed, by how much, at which case, and what to change."""
    key = "parity" if precision == "fp32" else f"parity.{precision}"
    lines = [
        explain(case, tolerance, key) for case in cases for criterion, explain in EXPLAINED.items()
        if criterion in case.failed
    ]  # fmt: skip
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
