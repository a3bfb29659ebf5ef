"""Exact rewrites of the exported ONNX graph that let onnxruntime fuse what the exporters spell another way.

GELU: the dynamo exporter writes `x * (0.5 * (1 + erf(x / sqrt 2)))` (TorchScript's spelling fuses already), and onnxruntime's GeluFusion only matches
`(x * 0.5) * (1 + erf(x / sqrt 2))`, so the widest activation of every feed-forward block took five
element-wise passes (Div, Erf, Add, Mul, Mul) instead of one Gelu (a BiasGelu after the bias Add).
Multiplying by 0.5 is exact in binary floating point, so the reordered graph computes the same bits.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import numpy_helper

GELU_FOR_FUSION = "gelu_for_fusion"  # the rewrite's name in model.json's `rewrites`


def scalar_constants(graph: onnx.GraphProto) -> dict[str, float]:
    """Every one-element initializer or Constant node output, by value name."""
    arrays = [(item.name, numpy_helper.to_array(item)) for item in graph.initializer]
    arrays += [
        (node.output[0], numpy_helper.to_array(node.attribute[0].t))
        for node in graph.node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
    ]
    return {name: float(array.reshape(-1)[0]) for name, array in arrays if array.size == 1}


def other_input(node: onnx.NodeProto, name: str) -> str | None:
    """The input of a two-input node that is not `name`, if `name` is one of its inputs."""
    inputs = list(node.input)
    if len(inputs) != 2 or name not in inputs:
        return None
    return inputs[1 - inputs.index(name)]


class GraphIndex:
    """Who produces each value, how many nodes read it, and the graph's scalar constants."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.constants = scalar_constants(graph)
        self.producers = {value: node for node in graph.node for value in node.output}
        self.readers: dict[str, int] = {}
        for node in graph.node:
            for value in node.input:
                self.readers[value] = self.readers.get(value, 0) + 1

    def sole_producer(self, value: str | None, op_type: str) -> onnx.NodeProto | None:
        """The `op_type` node producing `value`, where one node alone reads `value`."""
        node = self.producers.get(value or "")
        return node if node is not None and node.op_type == op_type and self.readers.get(value) == 1 else None

    def is_constant(self, name: str | None, value: float) -> bool:
        return name in self.constants and math.isclose(self.constants[name], value, rel_tol=1e-6)


def gelu_half(index: GraphIndex, x: str, half_output: str) -> tuple[onnx.NodeProto, str, str] | None:
    """For an outer `Mul(x, half_output)` that is torch's GELU: the half Mul, its 0.5 and its `1 + erf` inputs."""
    half = index.sole_producer(half_output, "Mul")
    half_name = next((name for name in half.input if index.is_constant(name, 0.5)), None) if half else None
    plus_one = other_input(half, half_name) if half and half_name else None
    add = index.sole_producer(plus_one, "Add")
    erfs = [index.producers[name] for name in add.input if name in index.producers] if add else []
    erf = next((node for node in erfs if node.op_type == "Erf"), None)
    if erf is None or not index.is_constant(other_input(add, erf.output[0]), 1.0):
        return None
    div = index.producers.get(erf.input[0])
    if div is None or div.op_type != "Div" or div.input[0] != x or not index.is_constant(div.input[1], math.sqrt(2)):
        return None
    return half, half_name, plus_one


def reorder_gelus(graph: onnx.GraphProto) -> int:
    """Rewrite every `Mul(x, Mul(0.5, 1 + erf(x / sqrt 2)))` as `Mul(Mul(x, 0.5), 1 + erf(x / sqrt 2))`;
    returns how many."""
    index = GraphIndex(graph)
    rewritten = 0
    for outer in graph.node:
        if outer.op_type != "Mul" or len(outer.input) != 2:
            continue
        for x, half_output in (tuple(outer.input), tuple(reversed(outer.input))):
            if (parts := gelu_half(index, x, half_output)) is not None:
                half, half_name, plus_one = parts
                half.input[:] = [x, half_name]  # x * 0.5, read by the outer Mul alone
                outer.input[:] = [half_output, plus_one]
                rewritten += 1
                break
    return rewritten


def spell_for_fusion(path: Path) -> list[str]:
    """Apply the rewrites to the ONNX file at `path` in place (external data untouched); their names."""
    model = onnx.load(str(path), load_external_data=False)
    if not reorder_gelus(model.graph):
        return []
    onnx.save(model, str(path))
    return [GELU_FOR_FUSION]
