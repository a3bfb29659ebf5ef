"""The layer map: which tensor of an exported graph is each torch module's output (the embeddings, each encoder
layer, its attention and feed-forward blocks, the head), for comparing a model layer by layer.

A node belongs to the module its exporter names it after (the dynamo exporter's name scopes, the TorchScript
exporter's `/model/<module path>/<op>` names, as `stages.graph.matmuls` reads them); nodes the exporter left
unnamed (an optimizer's Split) belong to the deepest module that the named nodes around them share. A module's
output is the one float tensor its nodes hand on that carries the tokens' values (reached from `input_ids` other
than through a Shape): a shape, a mask or a position table that the exporter computed once and shares with the next
layer is not one. A module with no such tensor, or several, is listed with the reason, never guessed. The map is
made on the fp32 graph; a precision conversion may rename some of its tensors (`stages.verify.layers` says which).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import asdict, dataclass

import onnx
from torch import nn

from stages.graph.matmuls import HEAD_MODULE, SCOPES_KEY
from stages.model.token_model import CustomModel

SHAPE_OPS = ("Shape", "Size")  # their outputs depend on a tensor's shape, not on its values
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
WRAPPER = "model."  # our exports wrap `CustomModel` as `GraphInputs.model`; a graph of CustomModel itself has none
TOKENS_INPUT = "input_ids"


@dataclass(frozen=True)
class LayerOutput:
    """One compared module: its path in `CustomModel` (`model.encoder.layer.3.attention`; `fc`: the head), its index
    in the encoder's layer stack (None: embeddings, head), and the graph tensor that is its output, or why none is."""

    module: str
    layer: int | None
    tensor: str | None
    unmatched: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def layer_stack(backbone: nn.Module, layers: int | None) -> nn.ModuleList | None:
    """The backbone's encoder layers: the module list of `num_hidden_layers` blocks, or None."""
    return next(
        (module for module in backbone.modules() if isinstance(module, nn.ModuleList) and len(module) == layers),
        None,
    )


def compared_modules(model: CustomModel) -> list[tuple[str, int | None]]:
    """The modules compared, in the order the model computes them: the embeddings, then per encoder layer its
    blocks that hold weights (attention, feed-forward, norms) and the layer itself, then the head."""
    names = {id(module): name for name, module in model.named_modules()}
    found: list[tuple[str, int | None]] = []
    if hasattr(model.model, "embeddings"):
        found.append((names[id(model.model.embeddings)], None))
    stack = layer_stack(model.model, getattr(model.config, "num_hidden_layers", None))
    for index, layer in enumerate(stack or []):
        blocks = [child for child in layer.children() if any(True for _ in child.parameters())]
        found.extend((names[id(module)], index) for module in [*blocks, layer])
    return [*found, (HEAD_MODULE, None)]


def exporter_scope(node: onnx.NodeProto) -> str | None:
    """The module path the exporter named a node after ('' for the graph's own nodes), or None if it named none."""
    scopes = next((entry.value for entry in node.metadata_props if entry.key == SCOPES_KEY), None)
    if scopes is not None:
        path = ast.literal_eval(scopes)
        return path[-2] if len(path) >= 2 else ""
    if node.name.startswith("/"):
        return ".".join(node.name[1:].split("/")[:-1])
    return None


def common_scope(scopes: list[str]) -> str:
    """The deepest module path (dot-separated components) that every one of `scopes` lies in."""
    parts = [scope.split(".") if scope else [] for scope in scopes]
    shared = []
    for components in zip(*parts, strict=False):
        if len(set(components)) > 1:
            break
        shared.append(components[0])
    return ".".join(shared)


def node_scopes(graph: onnx.GraphProto) -> list[str]:
    """Each node's module path. Nodes the exporter left unnamed, connected to one another, take the deepest module
    that all the named nodes around them share (those that feed them and those that read them)."""
    scopes = [exporter_scope(node) for node in graph.node]
    producer = {value: index for index, node in enumerate(graph.node) for value in node.output}
    neighbours: dict[int, set[int]] = defaultdict(set)
    for index, node in enumerate(graph.node):
        for value in node.input:
            if value in producer:
                neighbours[index].add(producer[value])
                neighbours[producer[value]].add(index)
    for start in range(len(graph.node)):
        if scopes[start] is not None:
            continue
        group, around, frontier = {start}, set(), [start]
        while frontier:
            for other in neighbours[frontier.pop()]:
                if scopes[other] is not None:
                    around.add(other)
                elif other not in group:
                    group.add(other)
                    frontier.append(other)
        shared = common_scope([scopes[other] for other in around])
        for index in group:
            scopes[index] = shared
    return scopes


def token_carrying_floats(model: onnx.ModelProto) -> set[str]:
    """The float tensors that depend on the token ids' values (not only on their shape); a tensor whose type
    shape inference cannot tell counts as float."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {value.name: value.type.tensor_type.elem_type for value in inferred.graph.value_info}
    dependent = {TOKENS_INPUT}
    for node in model.graph.node:
        if node.op_type not in SHAPE_OPS and any(value in dependent for value in node.input):
            dependent.update(node.output)
    return {value for value in dependent if types.get(value, onnx.TensorProto.FLOAT) in FLOAT_TYPES}


def layer_map(model: onnx.ModelProto, modules: list[tuple[str, int | None]]) -> list[LayerOutput]:
    """Each module's output tensor in `model` (a graph loaded without its weights will do), in `modules`' order;
    where two modules give the same tensor (a layer and its last block), the outer one alone is kept."""
    graph = model.graph
    scopes = node_scopes(graph)
    prefix = WRAPPER if any(inside(scope, WRAPPER + HEAD_MODULE) for scope in scopes) else ""
    candidates = token_carrying_floats(model)
    consumers: dict[str, set[int]] = defaultdict(set)
    for index, node in enumerate(graph.node):
        for value in node.input:
            consumers[value].add(index)
    graph_outputs = {value.name for value in graph.output}
    found = []
    for module, layer in modules:
        members = {index for index, scope in enumerate(scopes) if inside(scope, prefix + module)}
        handed_on = [
            value
            for index in sorted(members)
            for value in graph.node[index].output
            if value in candidates and (value in graph_outputs or consumers[value] - members)
        ]
        found.append(matched(module, layer, members, handed_on))
    tensors = [entry.tensor for entry in found]
    return [
        entry for index, entry in enumerate(found) if entry.tensor is None or entry.tensor not in tensors[index + 1 :]
    ]


def inside(scope: str, module: str) -> bool:
    return scope == module or scope.startswith(module + ".")


def matched(module: str, layer: int | None, members: set[int], handed_on: list[str]) -> LayerOutput:
    """The module's entry: its one output tensor, or why it has none."""
    if len(handed_on) == 1:
        return LayerOutput(module, layer, handed_on[0])
    if not members:
        reason = "no node of the graph is named after it"
    elif not handed_on:
        reason = "none of its tensors that carry the tokens' values reaches the rest of the graph"
    else:
        reason = f"it hands on {len(handed_on)} tensors that carry the tokens' values ({', '.join(handed_on[:4])})"
    return LayerOutput(module, layer, None, reason)
