"""SmoothQuant-style scale migration on the prepared graph, before int8: per-tensor activation quantization
loses resolution to a few outlier channels, so each weight MatMul's input channel k is divided by
s_k = max|x_k|^alpha / max|w_k|^(1 - alpha) (ranges calibrated on dataset rows) and the weight's row k is
multiplied by it. The fp32 function is unchanged (to float rounding). The division folds into the
LayerNormalization that produces the input when only these MatMuls read it (no extra work); otherwise one
Mul node divides the input for every MatMul that reads it. An input is migrated only where that lowers its
MatMuls' simulated int8 error SMOOTHING_GAIN times (`stages.quantize.sensitivity`): outlier channels, not the
ordinary spread of activations, which would only cost Mul nodes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from stages.core.params import RuntimeParams
from stages.graph.matmuls import WeightMatMul
from stages.graph.session import build_feed, create_session
from stages.quantize.sensitivity import exposing, matmul_weights

SMOOTHING_ALPHA = 0.5  # SmoothQuant's balance between activation and weight ranges (its default for BERT-size models)
SCALE_LIMITS = (1e-4, 1e4)  # no channel is scaled by more than this (all-zero channels included)
SMOOTHING_GAIN = 2.0  # an input is migrated where that divides its MatMuls' simulated int8 error at least this much


def channel_ranges(
    prepared: Path, activations: list[str], batches: Iterable[Mapping[str, np.ndarray]], runtime: RuntimeParams
) -> dict[str, np.ndarray]:
    """Each activation's largest |value| per channel (its last axis) over `batches`, from one fp32 run."""
    session = create_session(exposing(prepared, activations, prepared.with_name("ranges.onnx")), runtime)
    ranges: dict[str, np.ndarray] = {}
    for arrays in batches:
        for name, values in zip(activations, session.run(activations, build_feed(session, arrays)), strict=True):
            largest = np.abs(values.reshape(-1, values.shape[-1])).max(axis=0)
            ranges[name] = np.maximum(ranges[name], largest) if name in ranges else largest
    return ranges


def migration_scales(activation_range: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """s_k for one input read by `weights` ([K, N] each): balances the input's and the weights' ranges."""
    weight_range = np.max([np.abs(weight).max(axis=1) for weight in weights], axis=0)
    scales = np.maximum(activation_range, 1e-8) ** SMOOTHING_ALPHA / np.maximum(weight_range, 1e-8) ** (
        1 - SMOOTHING_ALPHA
    )
    return np.clip(scales, *SCALE_LIMITS).astype(np.float32)


def candidate_scales(
    prepared: Path, matmuls: list[WeightMatMul], ranges: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The migration scales of every weight MatMul input, from its channel ranges and its readers' weights."""
    weights = matmul_weights(prepared, matmuls)
    readers: dict[str, list[np.ndarray]] = defaultdict(list)
    for matmul in matmuls:
        readers[matmul.activation].append(weights[matmul.weight])
    return {activation: migration_scales(ranges[activation], group) for activation, group in readers.items()}


def worth_smoothing(matmuls: list[WeightMatMul], before: Mapping[str, float], after: Mapping[str, float]) -> set[str]:
    """The inputs whose MatMuls' worst simulated int8 error migration divides by SMOOTHING_GAIN or more."""
    worst_before: dict[str, float] = defaultdict(float)
    worst_after: dict[str, float] = defaultdict(float)
    for matmul in matmuls:
        worst_before[matmul.activation] = max(worst_before[matmul.activation], before[matmul.node])
        worst_after[matmul.activation] = max(worst_after[matmul.activation], after[matmul.node])
    return {name for name in worst_before if worst_before[name] >= SMOOTHING_GAIN * worst_after[name]}


def smooth(
    prepared: Path, output: Path, matmuls: list[WeightMatMul], scales: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Write the prepared graph to `output` with the inputs in `scales` migrated; returns what it did."""
    model = onnx.load(str(prepared))
    graph = model.graph
    initializers = {initializer.name: initializer for initializer in graph.initializer}
    nodes = {node.name: node for node in graph.node}
    producers = {value: node for node in graph.node for value in node.output}
    readers: dict[str, set[str]] = defaultdict(set)
    for node in graph.node:
        for value in node.input:
            readers[value].add(node.name)
    groups: dict[str, list[WeightMatMul]] = defaultdict(list)
    for matmul in matmuls:
        if matmul.activation in scales:
            groups[matmul.activation].append(matmul)
    folded: list[str] = []  # the norm outputs whose channels are now divided (a layer output parity cannot compare)
    divisions: dict[str | None, list[onnx.NodeProto]] = defaultdict(list)  # Mul nodes by the node they follow
    for activation, group in groups.items():
        divisors = scales[activation]
        for matmul in group:  # a new initializer: weights may be shared
            weight = numpy_helper.to_array(initializers[matmul.weight]) * divisors[:, None]
            nodes[matmul.node].input[1] = add_initializer(graph, weight, f"{matmul.node}_smoothed_B")
        producer = producers.get(activation)
        if (
            producer is not None
            and producer.op_type == "LayerNormalization"
            and readers[activation] == {matmul.node for matmul in group}
        ):
            for index in (1, 2)[: len(producer.input) - 1]:  # scale, and bias if present
                if producer.input[index]:
                    values = numpy_helper.to_array(initializers[producer.input[index]]) / divisors
                    producer.input[index] = add_initializer(graph, values, f"{producer.name}_smoothed_{index}")
            folded.append(activation)
            continue
        divided = f"{activation}_smoothed"
        inverse = add_initializer(graph, 1.0 / divisors, f"{activation}_inverse_scales")
        divisions[producer.name if producer else None].append(
            onnx.helper.make_node("Mul", [activation, inverse], [divided], name=divided)
        )
        for matmul in group:
            nodes[matmul.node].input[0] = divided
    ordered = [*divisions.pop(None, [])]
    for node in graph.node:  # each Mul right after the node whose output it divides
        ordered.extend([node, *divisions.get(node.name, [])])
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.save(model, str(output))
    return {
        "alpha": SMOOTHING_ALPHA,
        "inputs": len(groups),
        "folded_into_norms": len(folded),
        "mul_nodes": len(groups) - len(folded),
        "divided_norm_outputs": folded,
    }


def add_initializer(graph: onnx.GraphProto, values: np.ndarray, name: str) -> str:
    graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), name))
    return name
