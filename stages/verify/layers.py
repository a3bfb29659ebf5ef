"""Where the ONNX model parts from torch: one gate case rerun with every mapped layer output exposed
(`stages.verify.layer_runs`), each compared with its torch module's output over the non-pad tokens.

A layer output is judged as the gate judges the logits, `|onnx - torch| <= atol + rtol x |torch|` on every value of
a token and at most `outlier_share` of the tokens beyond it, with `atol` scaled to the output's size: times its torch
root mean square over the logits' (the head's own tolerance is the gate's), so a hidden state ten times smaller than
the logits may move ten times less. The first output beyond its tolerance, in the order the model computes them,
is where the two runtimes part; the relative error of each (||onnx - torch|| / ||torch||) is what each layer loses.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from stages.core.params import Params, RuntimeParams, Tolerance
from stages.graph.layer_map import LayerOutput
from stages.graph.matmuls import HEAD_MODULE
from stages.graph.metadata import ONNX_FILE, read_sidecar
from stages.graph.runners import resolve_serving
from stages.model.token_model import CustomModel
from stages.verify.cases import GateInputs
from stages.verify.compare import ROWS_CASE, CaseReport
from stages.verify.layer_runs import ModuleOutput, exposed_copy, exposed_run, torch_layer_outputs

LAYER_PLOT = "layer_error.json"  # in parity.plots
LOG_FLOOR = 1e-10  # a relative error below lands here on the plot's log10 axis
GROWTH_FLOOR = float(np.finfo(np.float32).eps)  # growth is counted from at least float32 rounding
GROWTH_SHOWN = 3  # outputs named where the relative error grows most
GROWTH_SHARE = 0.01  # ... among those whose relative error is at least this share of the largest (not rounding noise)


@dataclass
class Tally:
    """One layer output's comparison, summed over a case's batches."""

    tokens: int = 0
    squared_diff: float = 0.0
    squared_torch: float = 0.0
    values: int = 0
    max_abs_diff: float = 0.0
    nonfinite_tokens: int = 0
    excess: list[np.ndarray] = field(default_factory=list)  # per token: its worst |diff| - rtol x |torch|
    problem: str = ""

    def add(self, reference: np.ndarray | None, candidate: np.ndarray, mask: np.ndarray, rtol: float) -> None:
        """Count one batch: `reference` and `candidate` are [batch, sequence, ...], `mask` [batch, sequence]."""
        if reference is None or reference.shape != candidate.shape or reference.shape[:2] != mask.shape:
            shape = "nothing" if reference is None else list(reference.shape)
            self.problem = f"torch gives {shape}, the graph {list(candidate.shape)} for a batch of {list(mask.shape)}"
            return
        real = mask.astype(bool)
        torch_real = reference[real].reshape(int(real.sum()), -1)
        onnx_real = candidate[real].reshape(len(torch_real), -1)
        finite = np.isfinite(torch_real) & np.isfinite(onnx_real)
        diff = np.where(finite, np.abs(onnx_real - torch_real), 0.0)
        magnitude = np.where(finite, torch_real, 0.0)
        self.tokens += len(torch_real)
        self.values += torch_real.size
        self.squared_diff += float(np.square(diff).sum())
        self.squared_torch += float(np.square(magnitude).sum())
        self.max_abs_diff = max(self.max_abs_diff, float(diff.max(initial=0.0)))
        excess = (diff - rtol * np.abs(magnitude)).max(axis=-1, initial=0.0)
        broken = ~finite.all(axis=-1)
        self.nonfinite_tokens += int(broken.sum())
        self.excess.append(np.where(broken, np.inf, excess))

    @property
    def rms_torch(self) -> float:
        return (self.squared_torch / max(self.values, 1)) ** 0.5


@dataclass(frozen=True)
class LayerError:
    """One layer output of the case against torch's: how far it moved, and whether it is beyond its tolerance."""

    module: str
    layer: int | None
    tensor: str | None
    tokens: int
    rms_torch: float
    max_abs_diff: float
    relative_error: float
    atol: float  # the gate's atol scaled to this output's size
    tokens_over_tolerance: int
    tokens_over_allowed: int
    nonfinite_tokens: int
    diverged: bool
    unmatched: str = ""  # why it was not compared


def unmatched_error(entry: LayerOutput, reason: str) -> LayerError:
    return LayerError(entry.module, entry.layer, entry.tensor, 0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, False, reason)


def judged(entries: list[LayerOutput], tallies: dict[str, Tally], tolerance: Tolerance) -> list[LayerError]:
    """Every entry's verdict: atol scaled by its torch RMS over the head's, at most outlier_share tokens beyond."""
    head = tallies.get(HEAD_MODULE)
    head_rms = head.rms_torch if head is not None and head.values else 0.0
    errors = []
    for entry in entries:
        tally = tallies.get(entry.module)
        if tally is None or tally.problem or not tally.tokens:
            reason = entry.unmatched or (tally.problem if tally else "") or "its torch module did not run"
            errors.append(unmatched_error(entry, reason))
            continue
        atol = tolerance.atol * (tally.rms_torch / head_rms if head_rms else 1.0)
        over = int(np.count_nonzero(np.concatenate(tally.excess) > atol))
        allowed = int(tolerance.outlier_share * tally.tokens)
        errors.append(
            LayerError(
                entry.module, entry.layer, entry.tensor, tally.tokens, tally.rms_torch, tally.max_abs_diff,
                (tally.squared_diff / max(tally.squared_torch, 1e-30)) ** 0.5, atol, over, allowed,
                tally.nonfinite_tokens, over > allowed,
            )
        )  # fmt: skip
    return errors


@dataclass(frozen=True)
class LayerPicture:
    """One case's layer outputs against torch's, in the order the model computes them, and how they were run."""

    case: str
    precision: str
    runtime: str
    note: str  # "" where the layers ran as the served model runs, else how not
    rtol: float
    outputs: list[LayerError]

    @property
    def compared(self) -> list[LayerError]:
        return [output for output in self.outputs if not output.unmatched]

    @property
    def first_divergent(self) -> LayerError | None:
        return next((output for output in self.compared if output.diverged), None)

    def growth(self) -> list[tuple[LayerError, float]]:
        """The outputs where the relative error grows most over the output before, largest first (growth > 1), among
        those whose error is not negligible beside the largest."""
        largest = max((output.relative_error for output in self.compared), default=0.0)
        steps = [
            (output, output.relative_error / max(before.relative_error, GROWTH_FLOOR))
            for before, output in zip(self.compared, self.compared[1:], strict=False)
            if output.relative_error >= GROWTH_SHARE * largest
        ]
        return sorted((step for step in steps if step[1] > 1), key=lambda step: -step[1])[:GROWTH_SHOWN]

    def details(self) -> dict[str, Any]:
        """For parity_cases.json: how the case was rerun, the first divergent output, and every output's numbers."""
        divergent = self.first_divergent
        return {
            "case": self.case,
            "precision": self.precision,
            "runtime": self.runtime,
            "note": self.note,
            "first_divergent": None if divergent is None else divergent.module,
            "outputs": [asdict(output) for output in self.outputs],
        }

    def plot_rows(self) -> list[dict[str, Any]]:
        """For `dvc plots`: log10 of each compared output's relative error, by its position in the model."""
        return [
            {
                "position": position,
                "output": output.module,
                "log10_relative_error": round(float(np.log10(max(output.relative_error, LOG_FLOOR))), 4),
                "precision": self.precision,
            }
            for position, output in enumerate(self.compared)
        ]


def served_entries(metadata: dict[str, Any], served: onnx.ModelProto) -> tuple[list[LayerOutput], str]:
    """The export's layer map as the served graph has it: a tensor a conversion renamed, or whose channels int8 scale
    migration divided, is not compared; and a note when the export recorded no map."""
    if "layer_map" not in metadata:
        return [], "model.json holds no layer map (an export by an earlier version): run the export stage again"
    produced = {value for node in served.graph.node for value in node.output}
    smoothing = (metadata.get("precision_conversion") or {}).get("smoothing") or {}
    divided = set(smoothing.get("divided_norm_outputs", []))
    entries = []
    for entry in (LayerOutput(**fields) for fields in metadata["layer_map"]):
        if entry.tensor is not None and entry.tensor not in produced:
            reason = (
                f"the served {metadata['precision']} graph has no tensor {entry.tensor} (the conversion renamed it)"
            )
            entry = dataclasses.replace(entry, tensor=None, unmatched=reason)
        elif entry.tensor in divided:
            reason = "int8 scale migration divided its channels (folded into the norm that computes it)"
            entry = dataclasses.replace(entry, tensor=None, unmatched=reason)
        entries.append(entry)
    return entries, ""


def comparing(
    tallies: dict[str, Tally], tensors: dict[str, str], candidate: dict[str, np.ndarray], mask: np.ndarray, rtol: float
) -> ModuleOutput:
    """What takes a torch module's output on one batch: its tally counts it against the graph's tensor."""
    return lambda module, reference: tallies[module].add(reference, candidate[tensors[module]], mask, rtol)


def compare_layers(
    model: CustomModel,
    onnx_dir: Path,
    runtime: RuntimeParams,
    case: str,
    batches: list[dict[str, np.ndarray]],
    tolerance: Tolerance,
) -> LayerPicture:
    """Rerun `case`'s `batches` with the served graph's layer outputs exposed and compare each with torch's."""
    metadata = read_sidecar(onnx_dir)
    serving = resolve_serving(metadata, runtime)
    entries, note = served_entries(metadata, onnx.load(str(onnx_dir / ONNX_FILE), load_external_data=False))
    mapped = [entry for entry in entries if entry.tensor is not None]
    tallies = {entry.module: Tally() for entry in mapped}
    if not mapped:
        return LayerPicture(case, serving.precision, "", note, tolerance.rtol, judged(entries, tallies, tolerance))
    with tempfile.TemporaryDirectory(prefix=".parity-layers-", dir=onnx_dir.parent) as scratch:
        copy = exposed_copy(onnx_dir / ONNX_FILE, [entry.tensor for entry in mapped], Path(scratch))
        run = exposed_run(copy, runtime, serving, [entry.tensor for entry in mapped])
        tensors = {entry.module: entry.tensor for entry in mapped}
        for arrays in batches:
            compare = comparing(tallies, tensors, run.outputs(arrays), arrays["attention_mask"], tolerance.rtol)
            torch_layer_outputs(model, list(tensors), arrays, compare)  # each torch output compared as it is computed
    return LayerPicture(
        case, serving.precision, run.runtime, run.note, tolerance.rtol, judged(entries, tallies, tolerance)
    )


def layer_picture(
    model: CustomModel,
    onnx_dir: Path,
    params: Params,
    inputs: GateInputs,
    cases: list[CaseReport],
    tolerance: Tolerance,
) -> LayerPicture | None:
    """The layer picture of the first failed case, whole; when every case passed, of about `parity.layer_tokens` of
    the rows' tokens (None for 0)."""
    failed = next((case.name for case in cases if not case.passed), None)
    if failed is not None:
        batches = (
            inputs.rows.arrays if failed == ROWS_CASE else [arrays for grid, arrays in inputs.grid if grid == failed]
        )
        return compare_layers(model, onnx_dir, params.runtime, failed, batches, tolerance)
    if not params.parity.layer_tokens:
        return None
    rows = inputs.rows.arrays
    tokens = sum(int(np.count_nonzero(arrays["attention_mask"])) for arrays in rows)
    count = min(len(rows), math.ceil(len(rows) * params.parity.layer_tokens / max(tokens, 1)))
    spread = sorted({int(index) for index in np.linspace(0, len(rows) - 1, count).round()})  # longest to shortest
    chosen = [rows[index] for index in spread]
    name = ROWS_CASE if len(chosen) == len(rows) else f"{ROWS_CASE} ({len(chosen)} of {len(rows)} batches)"
    return compare_layers(model, onnx_dir, params.runtime, name, chosen, tolerance)
