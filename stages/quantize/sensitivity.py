"""How much int8 costs each weight MatMul on real activations: one fp32 run with the MatMuls' inputs exposed,
then each MatMul's output computed again from its input and weight quantized as onnxruntime's dynamic int8 does
(the activation per tensor to uint8, the weight per output channel to int8, 7-bit for `no_vnni`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from stages.core.params import RuntimeParams
from stages.graph.matmuls import WeightMatMul
from stages.graph.session import build_feed, create_session

UINT8_LEVELS = 255  # DynamicQuantizeLinear's activation range
INT8_LIMIT = {"vnni": 127, "no_vnni": 64}  # symmetric weight range, per target (reduce_range: 7 bits)


def fake_quantized_activation(values: np.ndarray) -> np.ndarray:
    """`values` after DynamicQuantizeLinear and back: one uint8 scale and zero point for the whole tensor."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = (high - low) / UINT8_LEVELS or 1.0
    zero_point = np.clip(np.round(-low / scale), 0, UINT8_LEVELS)
    levels = np.clip(np.round(values / scale) + zero_point, 0, UINT8_LEVELS)
    return ((levels - zero_point) * scale).astype(np.float32)


def fake_quantized_weight(weight: np.ndarray, target: str) -> np.ndarray:
    """A [K, N] weight after symmetric per-output-channel int8 quantization and back."""
    limit = INT8_LIMIT[target]
    scale = np.abs(weight).max(axis=0, keepdims=True) / limit
    scale[scale == 0] = 1.0
    return (np.clip(np.round(weight / scale), -limit, limit) * scale).astype(np.float32)


def exposing(prepared: Path, values: Iterable[str], target: Path) -> Path:
    """A copy of the prepared graph at `target` that also outputs `values`."""
    model = onnx.load(str(prepared))
    known = {output.name for output in model.graph.output}
    for name in values:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    onnx.save(model, str(target))
    return target


def matmul_weights(prepared: Path, matmuls: list[WeightMatMul]) -> dict[str, np.ndarray]:
    """The MatMuls' weights ([K, N] each) by initializer name."""
    return {
        initializer.name: numpy_helper.to_array(initializer)
        for initializer in onnx.load(str(prepared)).graph.initializer
        if initializer.name in {matmul.weight for matmul in matmuls}
    }


def simulated_int8_errors(
    prepared: Path,
    matmuls: list[WeightMatMul],
    batches: Iterable[Mapping[str, np.ndarray]],
    runtime: RuntimeParams,
    target: str,
    scale_sets: Sequence[Mapping[str, np.ndarray]] = ({},),
) -> list[dict[str, float]]:
    """Each MatMul's relative output error under int8 (||int8 - fp32|| / ||fp32|| over `batches`), by node, once
    per scale set (in one fp32 run): with scales for an input, as if its channels were divided by them and its
    weights' rows multiplied."""
    weights = matmul_weights(prepared, matmuls)
    ones = np.ones(1, np.float32)
    quantized = [
        {
            matmul.node: fake_quantized_weight(
                weights[matmul.weight] * scales.get(matmul.activation, ones)[:, None], target
            )
            for matmul in matmuls
        }
        for scales in scale_sets
    ]
    activations = sorted({matmul.activation for matmul in matmuls})
    session = create_session(exposing(prepared, activations, prepared.with_name("exposed.onnx")), runtime)
    squared_errors = [dict.fromkeys((matmul.node for matmul in matmuls), 0.0) for _ in scale_sets]
    squared_output = dict.fromkeys(squared_errors[0], 0.0)
    for arrays in batches:
        outputs = dict(zip(activations, session.run(activations, build_feed(session, arrays)), strict=True))
        for matmul in matmuls:
            rows = weights[matmul.weight].shape[0]
            values = outputs[matmul.activation].reshape(-1, rows)
            exact = values @ weights[matmul.weight]
            squared_output[matmul.node] += float(np.square(exact).sum())
            for scales, weight, errors in zip(scale_sets, quantized, squared_errors, strict=True):
                divided = values / scales.get(matmul.activation, ones)
                approximate = fake_quantized_activation(divided) @ weight[matmul.node]
                errors[matmul.node] += float(np.square(approximate - exact).sum())
    return [
        {node: (errors[node] / max(squared_output[node], 1e-30)) ** 0.5 for node in errors} for errors in squared_errors
    ]
