"""Comparing torch and ONNX logits: statistics over non-pad tokens, the verdict per case, and the report.

Every case gates on finiteness and on its logits' values at the precision's tolerance: every token's within
`atol + rtol x |torch|` for fp32; for a reduced precision (int8, bf16, fp16) all but `outlier_share` of a case's
tokens (the grid's cases pooled), since such a model moves a few logits of a fine-tuned model (10 and more) by
several units without changing a label, and one outlier among ~50,000 tokens would otherwise decide, while a broken
graph is beyond tolerance on many tokens. Label agreement is judged where it can be measured: over the dataset rows' tokens pooled, and on a grid case (random token ids,
where a fine-tuned model is unsure) only over the tokens whose reference margin (top-1 minus top-2 logit)
exceeds what the tolerance lets both logits move, so that a flip there is a real error and not a near-tie.
On the rows, the candidate's spans must match the reference's (span F1) and, with gold annotations, its
entity F1 may fall at most `max_f1_drop` below the reference's; a CRF head's decoded labels must agree as labels do.
"""

from __future__ import annotations

import dataclasses
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
    decoded_label_agreement: float | None = None  # a CRF head's: the rows' tokens whose decoded label is torch's


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
    min_passing_atol: float  # the smallest atol that would pass at the configured rtol (and outlier share)
    tokens_over_tolerance: int  # tokens with any logit where |onnx - torch| > atol + rtol * |torch|
    tokens_over_allowed: int  # how many of them the criterion allows: outlier_share of the tokens, rounded down
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
    decoded_label_agreement: float | None  # the rows of a CRF head: over every token, its Viterbi label's agreement
    failed: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failed


def agreement(reference_labels: np.ndarray, labels: np.ndarray) -> float:
    """The share of tokens whose label is the reference's (1 where there are none)."""
    return float(np.mean(reference_labels == labels)) if len(labels) else 1.0


def decisive(reference: np.ndarray, tolerance: Tolerance) -> np.ndarray:
    """Tokens whose label the tolerance protects: the reference's top-1 and top-2 logits are further apart than
    both may move (atol + rtol x |logit| each), so a flip there means a logit beyond tolerance, not a near-tie."""
    if reference.shape[-1] < 2:
        return np.ones(len(reference), dtype=bool)
    top = np.sort(reference, axis=-1)[:, -2:]
    movement = 2 * tolerance.atol + tolerance.rtol * np.abs(top).sum(axis=-1)
    return top[:, 1] - top[:, 0] > movement


def passing_atol(excess: np.ndarray, allowed: int) -> float:
    """The smallest atol that leaves at most `allowed` tokens beyond it, given each token's excess over rtol."""
    if allowed >= len(excess):
        return 0.0
    return float(max(np.partition(excess, len(excess) - 1 - allowed)[len(excess) - 1 - allowed], 0.0))


def span_failures(spans: SpanQuality | None, tolerance: Tolerance) -> dict[str, bool]:
    """The rows' span criteria: span F1 against the reference's spans and, with gold, the entity F1 drop."""
    if spans is None:
        return {}
    entity_drop = spans.entity_f1_candidate is not None and (
        spans.entity_f1_candidate < spans.entity_f1_reference - tolerance.max_f1_drop
    )
    decoded = spans.decoded_label_agreement
    return {
        "span_f1": spans.span_f1 < 1 - tolerance.max_f1_drop,
        "entity_f1": entity_drop,
        "decoded_labels": decoded is not None and decoded < tolerance.min_label_agreement,
    }


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
    excess = (diff - tolerance.rtol * magnitude).max(axis=-1, initial=0.0)  # per token: its worst logit
    over = int(np.count_nonzero(excess > tolerance.atol))
    allowed = int(tolerance.outlier_share * len(excess))
    counted = np.ones(len(torch_real), dtype=bool) if pooled else decisive(np.where(finite, torch_real, 0.0), tolerance)
    same = np.argmax(torch_real, axis=-1) == np.argmax(onnx_real, axis=-1)
    agreement = float(np.mean(same[counted])) if counted.any() else 1.0
    counts = {
        "nan_torch": int(np.isnan(torch_real).sum()),
        "inf_torch": int(np.isinf(torch_real).sum()),
        "nan_onnx": int(np.isnan(onnx_real).sum()),
        "inf_onnx": int(np.isinf(onnx_real).sum()),
    }
    failed = {
        "values": over > allowed,
        "label_agreement": agreement < tolerance.min_label_agreement,
        "finite": any(counts.values()),
        **span_failures(spans, tolerance),
    }
    return CaseReport(
        name=name,
        batches=len(pairs),
        tokens=len(torch_real),
        max_abs_diff=float(diff.max(initial=0.0)),
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        p99_abs_diff=float(np.percentile(diff, 99)) if diff.size else 0.0,
        max_rel_diff=float((diff / np.maximum(magnitude, np.finfo(np.float32).tiny)).max(initial=0.0)),
        min_passing_atol=passing_atol(excess, allowed),
        tokens_over_tolerance=over,
        tokens_over_allowed=allowed,
        label_agreement=agreement,
        agreement_tokens=int(counted.sum()),
        pad_max_abs_diff=pad_max,
        span_f1=None if spans is None else spans.span_f1,
        entity_f1_reference=None if spans is None else spans.entity_f1_reference,
        entity_f1_candidate=None if spans is None else spans.entity_f1_candidate,
        decoded_label_agreement=None if spans is None else spans.decoded_label_agreement,
        failed=tuple(criterion for criterion, fails in failed.items() if fails),
        **counts,
    )


def pooled_grid_values(grid: list[CaseReport], tolerance: Tolerance) -> list[CaseReport]:
    """The grid's cases judged on values together where a share of outliers is allowed: a case of a few random-id
    tokens cannot measure a share of 0.1%, so at most `outlier_share` of the grid's tokens pooled may be beyond
    tolerance, and when more are, every grid case holding one fails."""
    if not tolerance.outlier_share:
        return grid
    over = sum(case.tokens_over_tolerance for case in grid)
    allowed = int(tolerance.outlier_share * sum(case.tokens for case in grid))
    return [
        dataclasses.replace(
            case,
            tokens_over_allowed=allowed,
            failed=(
                *(("values",) if over > allowed and case.tokens_over_tolerance else ()),
                *(criterion for criterion in case.failed if criterion != "values"),
            ),
        )
        for case in grid
    ]


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
        "outlier_share": tolerance.outlier_share,
        "provider": provider,
        "failures": failures,
    }
    if rows.entity_f1_candidate is not None:
        report.update(entity_f1_torch=rows.entity_f1_reference, entity_f1_onnx=rows.entity_f1_candidate)
    if rows.decoded_label_agreement is not None:
        report.update(rows_decoded_label_agreement=rows.decoded_label_agreement)
    return report


def case_details(cases: list[CaseReport]) -> dict:
    """Every case's statistics in full, for the file a user opens on purpose, and what each criterion counts."""
    return {"criteria": CRITERIA, **{case.name: {**asdict(case), "passed": case.passed} for case in cases}}


CRITERIA = {  # what each criterion counts, and why (parity_cases.json carries it, docs/int8.md explains it)
    "values": "in every case, the non-pad tokens with a logit beyond atol + rtol x |torch| (tokens_over_tolerance) "
    "at most outlier_share of the case's tokens (tokens_over_allowed; the grid's cases pooled, as a case of a few "
    "random-id tokens cannot measure a share): none for fp32; for int8, bf16 and fp16 a few, because a reduced "
    "precision moves a few logits of a fine-tuned model by several units without changing its label, while a broken "
    "graph is beyond tolerance on many tokens; max_abs_diff is reported, never gates",
    "finite": "no NaN or Inf on either side, in every case",
    "label_agreement": "rows: the share of all the rows' tokens (pooled) whose label is torch's; grid: the same share "
    "over the decisive tokens alone (agreement_tokens), those whose torch margin (top-1 minus top-2 logit) exceeds "
    "what the tolerance lets both logits move; random token ids leave a fine-tuned model unsure, and a near-tie "
    "flipped there is noise, not an error",
    "span_f1": "rows: F1 of the ONNX model's spans (exact boundaries and label) against torch's, at least 1 - max_f1_drop",
    "entity_f1": "rows with gold annotations: the ONNX model's entity F1 at most max_f1_drop below torch's",
    "decoded_labels": "rows of a model with a CRF head: the share of the rows' tokens (pooled) whose label, decoded "
    "from the ONNX model's emissions with the CRF (Viterbi, as infer decodes it), is the one decoded from torch's, "
    "at least min_label_agreement",
}
