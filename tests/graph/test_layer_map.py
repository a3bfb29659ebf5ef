"""The layer map: each compared torch module's output found in an exported graph by the exporter's names and scopes,
and a module the graph cannot tell listed with the reason, never guessed. (That each mapped tensor holds its module's
output, for every family and both exporters: tests/verify/test_layers.py.)"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from stages.core.params import ExportParams
from stages.graph.exporter import export_graph
from stages.graph.layer_map import compared_modules, layer_map
from stages.model.token_model import CustomModel
from tests.backbones import make_backbone

BERT_LAYER = ["attention", "intermediate", "output"]


def bert_export(tmp_path: Path) -> tuple[CustomModel, onnx.ModelProto]:
    model = make_backbone(tmp_path / "backbone", "bert")
    export_graph(model, ExportParams(exporter="torchscript", opset=17), tmp_path / "model.onnx")
    return model, onnx.load(str(tmp_path / "model.onnx"))


def test_the_compared_modules_are_the_embeddings_each_layers_blocks_and_the_layer_then_the_head(tmp_path):
    bert = make_backbone(tmp_path / "bert", "bert")
    layers = [
        [(f"model.encoder.layer.{k}.{block}", k) for block in BERT_LAYER] + [(f"model.encoder.layer.{k}", k)]
        for k in (0, 1)
    ]
    assert compared_modules(bert) == [("model.embeddings", None), *layers[0], *layers[1], ("fc", None)]
    modernbert = [name for name, _ in compared_modules(make_backbone(tmp_path / "modernbert", "modernbert"))]
    assert modernbert[1:6] == [  # layer 0's attention norm is an Identity: no weights, nothing to compare
        "model.layers.0.attn", "model.layers.0.mlp_norm", "model.layers.0.mlp", "model.layers.0",
        "model.layers.1.attn_norm",
    ]  # fmt: skip


def test_a_layer_and_its_last_block_are_one_tensor_and_one_entry(tmp_path):
    model, graph = bert_export(tmp_path)
    entries = layer_map(graph, compared_modules(model))
    assert [(entry.module, entry.layer) for entry in entries] == [
        ("model.embeddings", None),
        *[(f"model.encoder.layer.{k}{block}", k) for k in (0, 1) for block in (".attention", ".intermediate", "")],
        ("fc", None),
    ]
    prefix = "/model/model/encoder/layer.1"
    assert [entry.tensor for entry in entries[4:]] == [
        f"{prefix}/attention/output/LayerNorm/LayerNormalization_output_0",
        f"{prefix}/intermediate/intermediate_act_fn/Mul_1_output_0",
        f"{prefix}/output/LayerNorm/LayerNormalization_output_0",
        "logits",
    ]
    assert all(not entry.unmatched for entry in entries)


def test_a_module_that_hands_on_two_tensors_or_names_no_node_is_listed_with_why(tmp_path):
    model, graph = bert_export(tmp_path)
    context = "/model/model/encoder/layer.0/attention/self/Reshape_4_output_0"  # what attention.output reads
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(context))  # now it leaves the layer twice
    for node in graph.graph.node:  # layer 1's feed-forward input block loses its exporter names
        if node.name.startswith("/model/model/encoder/layer.1/intermediate/"):
            node.name = f"unnamed_{node.name.rsplit('/', 1)[-1]}"
    entries = {entry.module: entry for entry in layer_map(graph, compared_modules(model))}
    attention_output = "/model/model/encoder/layer.0/attention/output/LayerNorm/LayerNormalization_output_0"
    for module in ("model.encoder.layer.0.attention", "model.encoder.layer.0"):
        assert entries[module].tensor is None
        assert context in entries[module].unmatched and entries[module].unmatched.startswith("it hands on 2 tensors")
    assert attention_output not in entries["model.encoder.layer.0"].unmatched  # its own output feeds the layer
    assert (
        entries["model.encoder.layer.1.intermediate"].tensor,
        entries["model.encoder.layer.1.intermediate"].unmatched,
    ) == (
        None,
        "no node of the graph is named after it",
    )
    assert all(entries[module].tensor for module in ("model.embeddings", "model.encoder.layer.1", "fc"))


def test_a_graph_of_the_seed_model_itself_without_our_wrapper_is_mapped(tmp_path):
    """An `export.onnx_file` exported as the notes do, from CustomModel itself: node names start at its modules."""
    model = make_backbone(tmp_path / "backbone", "deberta-v2")
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    torch.onnx.export(
        model, (ids, torch.ones_like(ids)), str(tmp_path / "seed.onnx"), input_names=["input_ids", "attention_mask"],
        output_names=["logits"], dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    entries = layer_map(onnx.load(str(tmp_path / "seed.onnx")), compared_modules(model))
    assert len(entries) == 8 and all(entry.tensor for entry in entries), entries
    assert entries[1].tensor == "/model/encoder/layer.0/attention/output/LayerNorm/LayerNormalization_output_0"
