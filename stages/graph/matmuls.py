"""The weight MatMuls of an exported graph: which torch module each computes, how much work it does, and the
two nodes with a role of their own (the head, and the word embedding's Gather), for choosing an int8 mix."""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass

import onnx

HEAD_MODULE = "fc"  # `CustomModel.fc`, the per-token Linear head
SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # the dynamo exporter's module path of each node
TRACED_PREFIX = "/model/"  # the TorchScript exporter names nodes by module path: /model/<module path>/MatMul


@dataclass(frozen=True)
class WeightMatMul:
    """A MatMul whose B input is a weight, as quantize_dynamic sees it in the prepared graph."""

    node: str  # its name in the prepared graph (what `nodes_to_exclude` takes)
    module: str  # the torch module it computes, e.g. `model.encoder.layer.0.attention.self.query`; `fc`: the head
    activation: str  # its A input
    weight: str  # its B initializer, [K, N]
    macs: int  # multiply-adds per token: K x N

    @property
    def is_head(self) -> bool:
        return self.module == HEAD_MODULE


def constant_values(graph: onnx.GraphProto) -> set[str]:
    """Names of the values computable from initializers alone (weights, and Transposes or Casts of them)."""
    constant = {initializer.name for initializer in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(name in constant for name in node.input if name)):
            constant.update(node.output)
    return constant


def matmul_census(model: onnx.ModelProto) -> dict[str, int]:
    """MatMuls by kind: weight (B constant) in float, quantized (MatMulInteger), activation x activation."""
    constant = constant_values(model.graph)
    counts = Counter(
        "quantized_weight_matmuls"
        if node.op_type == "MatMulInteger"
        else "float_weight_matmuls"
        if node.input[1] in constant
        else "activation_matmuls"
        for node in model.graph.node
        if node.op_type in ("MatMul", "MatMulInteger")
    )
    return {key: counts[key] for key in ("quantized_weight_matmuls", "float_weight_matmuls", "activation_matmuls")}


def module_of(node: onnx.NodeProto) -> str | None:
    """The torch module an exported node computes: from the dynamo exporter's name scopes, or the traced name."""
    scopes = next((entry.value for entry in node.metadata_props if entry.key == SCOPES_KEY), None)
    if scopes is not None:
        path = ast.literal_eval(scopes)
        return path[-2].removeprefix("model.") if len(path) >= 2 else None
    if node.name.startswith(TRACED_PREFIX):
        return ".".join(node.name[len(TRACED_PREFIX) :].split("/")[:-1]) or None
    return None


def weight_matmuls(prepared: onnx.ModelProto, exported: onnx.ModelProto) -> list[WeightMatMul]:
    """The prepared graph's weight MatMuls in graph order, named after the modules of the exported graph's nodes.

    A module applied twice (DeBERTa's query and key projections also project the relative positions) gets
    `#2` on its second MatMul; a node the exporter did not name after a module keeps its node name.
    """
    modules = {node.name: module_of(node) for node in exported.graph.node}
    shapes = {initializer.name: tuple(initializer.dims) for initializer in prepared.graph.initializer}
    found, seen = [], Counter()
    for node in prepared.graph.node:
        if node.op_type != "MatMul" or len(shapes.get(node.input[1], ())) != 2:
            continue
        module = modules.get(node.name) or node.name
        seen[module] += 1
        rows, columns = shapes[node.input[1]]
        name = module if seen[module] == 1 else f"{module}#{seen[module]}"
        found.append(WeightMatMul(node.name, name, node.input[0], node.input[1], rows * columns))
    return found


def word_embedding_gather(model: onnx.ModelProto, input_name: str = "input_ids") -> str | None:
    """The Gather that looks the token ids up in a weight table (through the graph's Casts), or None."""
    weights = {initializer.name for initializer in model.graph.initializer}
    sources = {input_name}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in sources:
            sources.update(node.output)
        elif node.op_type == "Gather" and node.input[0] in weights and node.input[1] in sources:
            return node.name
    return None
