"""Trying int8 mixes: quantize the prepared graph with some nodes kept float, run the gate's inputs through it,
and judge it against the fp32 ONNX model with the gate's int8 tolerance."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from stages.core.params import Params, RuntimeParams, Tolerance
from stages.graph.matmuls import WeightMatMul, weight_matmuls, word_embedding_gather
from stages.graph.precision import quantize_prepared
from stages.graph.session import create_session, onnx_logits
from stages.quantize.sensitivity import simulated_int8_errors
from stages.quantize.smoothing import candidate_scales, channel_ranges, smooth, worth_smoothing
from stages.verify.cases import GateInputs
from stages.verify.compare import ROWS_CASE, CaseReport
from stages.verify.explain import labels_pass, shortfalls

log = logging.getLogger(__name__)

PLAIN, SMOOTHED = "plain", "smoothed"  # the prepared graph, and the same graph after scale migration
CALIBRATION_SLOTS = 4096  # padded token slots of the first row batches that ranges and int8 errors are measured on


@dataclass(frozen=True)
class Trial:
    """One mix: the graph quantized (plain or smoothed), the nodes it keeps float, the gate's verdict per case,
    and the candidate model's file."""

    graph: str
    floats: tuple[str, ...]
    cases: list[CaseReport]
    path: Path

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def label_agreement(self) -> float:
        return min(case.label_agreement for case in self.cases)

    @property
    def rows_label_agreement(self) -> float:
        return next(case.label_agreement for case in self.cases if case.name == ROWS_CASE)

    @property
    def max_abs_diff(self) -> float:
        return max(case.max_abs_diff for case in self.cases)


@dataclass
class MixSearch:
    """What every trial shares: the prepared graphs, the weight MatMuls, the gate's inputs and fp32 logits."""

    graphs: dict[str, Path]
    exported: onnx.ModelProto
    target: str
    runtime: RuntimeParams
    tolerance: Tolerance
    bound: float
    inputs: GateInputs
    reference: list[list[np.ndarray]]
    matmuls: list[WeightMatMul]
    embedding: str | None
    smoothing: dict[str, Any] | None = None
    trials: list[Trial] = field(default_factory=list)

    @classmethod
    def start(cls, prepared: Path, exported: Path, target: str, inputs: GateInputs, params: Params) -> MixSearch:
        """Read the prepared graph's MatMuls (named after the exported graph's modules) and run it in fp32."""
        graph = onnx.load(str(prepared))
        exported_graph = onnx.load(str(exported), load_external_data=False)
        runtime = params.runtime.on_cpu(params.runtime.intra_op_num_threads)
        session = create_session(prepared, runtime)
        reference = inputs.run(lambda arrays: onnx_logits(session, arrays))
        return cls(
            graphs={PLAIN: prepared},
            exported=exported_graph,
            target=target,
            runtime=runtime,
            tolerance=params.parity.int8,
            bound=params.export.int8_max_float_share,
            inputs=inputs,
            reference=reference,
            matmuls=weight_matmuls(graph, exported_graph),
            embedding=word_embedding_gather(graph),
        )

    def calibration_rows(self) -> list[dict[str, np.ndarray]]:
        """The first row batches, up to CALIBRATION_SLOTS padded token slots (at least one batch)."""
        batches, slots = [], 0
        for arrays in self.inputs.rows.arrays:
            if slots >= CALIBRATION_SLOTS:
                break
            batches.append(arrays)
            slots += arrays["input_ids"].size
        return batches

    def matmuls_in(self, graph: str) -> list[WeightMatMul]:
        """The weight MatMuls as `graph` has them (smoothing gives them new inputs and weights, not new names)."""
        return weight_matmuls(onnx.load(str(self.graphs[graph]), load_external_data=False), self.exported)

    def smooth(self) -> bool:
        """Add the smoothed graph: the inputs whose migration divides their MatMuls' simulated int8 error at
        least SMOOTHING_GAIN times migrated, ranges calibrated on the rows; False if no input gains so much."""
        plain, rows = self.graphs[PLAIN], self.calibration_rows()
        activations = sorted({matmul.activation for matmul in self.matmuls})
        scales = candidate_scales(plain, self.matmuls, channel_ranges(plain, activations, rows, self.runtime))
        before, after = simulated_int8_errors(plain, self.matmuls, rows, self.runtime, self.target, [{}, scales])
        gaining = worth_smoothing(self.matmuls, before, after)
        if not gaining:
            return False
        self.graphs[SMOOTHED] = plain.with_name("smoothed.onnx")
        chosen = {activation: scales[activation] for activation in gaining}
        self.smoothing = smooth(plain, self.graphs[SMOOTHED], self.matmuls, chosen)
        return True

    @property
    def head(self) -> str | None:
        return next((matmul.node for matmul in self.matmuls if matmul.is_head), None)

    def share(self, floats: tuple[str, ...]) -> float:
        """The share of the weight MatMuls' work (multiply-adds per token) that `floats` keeps float."""
        kept = sum(matmul.macs for matmul in self.matmuls if matmul.node in floats)
        return kept / max(sum(matmul.macs for matmul in self.matmuls), 1)

    def trial(self, floats: tuple[str, ...], graph: str = PLAIN) -> Trial:
        """Quantize `graph` with `floats` kept float and judge the result; a failing candidate's file is removed."""
        path = self.graphs[PLAIN].with_name(f"trial-{len(self.trials)}.onnx")
        quantize_prepared(self.graphs[graph], path, self.target, floats)
        trial = Trial(graph, floats, self.judge(path), path)
        self.trials.append(trial)
        log.info(
            "int8 mix, %s graph, %d nodes float (%s): gate %s, label agreement %.4f (rows %.4f), max |diff| %.3g",
            graph,
            len(floats),
            ", ".join(self.names(floats)) or "none",
            "passes" if trial.passed else "fails",
            trial.label_agreement,
            trial.rows_label_agreement,
            trial.max_abs_diff,
        )
        if not trial.passed:
            path.unlink()
        return trial

    def judge(self, path: Path) -> list[CaseReport]:
        """The gate's cases for the int8 model at `path`: its logits on every input against the fp32 reference."""
        session = create_session(path, self.runtime)
        return self.inputs.judge(
            self.reference, self.inputs.run(lambda arrays: onnx_logits(session, arrays)), self.tolerance
        )

    def names(self, floats: tuple[str, ...]) -> list[str]:
        """Module names of float MatMuls, `word embedding` for the embedding's Gather."""
        modules = {matmul.node: matmul.module for matmul in self.matmuls}
        return [modules.get(node, "word embedding") for node in floats]

    def report(self, chosen: Trial, reasons: dict[str, str], seconds: float) -> dict[str, Any]:
        """For `model.json`: the mix, why each float MatMul stayed float, and every trial's verdict."""
        float_matmuls = [
            {
                "node": matmul.node,
                "module": matmul.module,
                "work_share": round(self.share((matmul.node,)), 6),
                "reason": reasons.get(matmul.node, ""),
            }
            for matmul in self.matmuls
            if matmul.node in chosen.floats
        ]
        embedding_float = self.embedding is not None and self.embedding in chosen.floats
        return {
            "mix": "full" if chosen.graph == PLAIN and not chosen.floats else "accuracy_aware",
            "smoothing": self.smoothing if chosen.graph == SMOOTHED else None,
            "float_matmuls": float_matmuls,
            "float_work_share": round(self.share(chosen.floats), 6),
            "max_float_work_share": self.bound,
            "word_embedding": f"float: {reasons.get(self.embedding, '')}" if embedding_float else "int8",
            "gate": "parity.int8 on the parity rows and grid, against the fp32 ONNX model",
            "trials": [self.summary(trial) for trial in self.trials],
            "search_seconds": round(seconds, 1),
        }

    def summary(self, trial: Trial) -> dict[str, Any]:
        return {
            "graph": trial.graph,
            "float": self.names(trial.floats),
            "passed": trial.passed,
            "label_agreement": round(trial.label_agreement, 5),
            "rows_label_agreement": round(trial.rows_label_agreement, 5),
            "max_abs_diff": round(trial.max_abs_diff, 4),
        }

    def no_mix_message(self) -> str:
        """One line: nothing within the bound passed, what failed for the best trial and by how much, and whether
        its labels alone would have passed."""
        best = max(self.trials, key=lambda trial: (trial.label_agreement, -trial.max_abs_diff))
        matmuls = sum(node != self.embedding for node in best.floats)
        failing = shortfalls(best.cases, self.tolerance)
        labels = "would have passed" if labels_pass(best.cases) else "fail too"
        return (
            f"export.precision = int8: no mix of int8 and float weight MatMuls with at most export.int8_max_float_share "
            f"= {self.bound:g} of their work float passes the parity gate (parity.int8, on the parity rows and grid); "
            f"the best ({matmuls} of {len(self.matmuls)} MatMuls float, {self.share(best.floats):.0%} of the work, "
            f"label agreement {best.label_agreement:.4f}, rows {best.rows_label_agreement:.4f}) fails {failing}; its "
            f"labels alone {labels}; use export.precision: fp32, raise export.int8_max_float_share, or loosen "
            f"parity.int8"
        )
