"""The exported graph spells GELU so onnxruntime fuses it, in every family and by either exporter, and the
respelled graph computes what torch computes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stages.core.params import ExportParams
from stages.graph.exporter import export_graph
from stages.graph.fusible import GELU_FOR_FUSION
from stages.model.token_model import CustomModel
from tests.backbones import KINDS, tiny_config

FUSED_GELUS = {"Gelu", "BiasGelu", "FastGelu"}


def optimized_ops(path: Path) -> Counter:
    """The op types onnxruntime runs for the graph at `path`, after its own fusions."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.parametrize(
    ("kind", "exporter"),
    [*((kind, "dynamo") for kind in KINDS), ("bert", "torchscript"), ("deberta-v2", "torchscript")],
)
def test_every_gelu_reaches_onnxruntime_fused(tmp_path, monkeypatch, kind, exporter):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = CustomModel(tiny_config(kind, 100, 0), num_labels=4, classifier_dropout=0.1).eval()
    params = ExportParams(
        exporter, 18 if exporter == "dynamo" else 17, "int64", "fp32", "auto", 0.5, 2, 6, None, "onnx"
    )
    path = tmp_path / "model.onnx"
    rewrites = export_graph(model, params, path)
    assert rewrites == ([GELU_FOR_FUSION] if exporter == "dynamo" else [])  # TorchScript spells it fusibly already
    ops = optimized_ops(path)
    assert ops["Erf"] == 0 and sum(ops[name] for name in FUSED_GELUS) >= 1, ops
    ids = torch.randint(1, 100, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    arrays = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {graph_input.name: arrays[graph_input.name] for graph_input in session.get_inputs()}
    with torch.no_grad():
        expected = model(**{name: torch.from_numpy(value) for name, value in feed.items()}).numpy()
    real = mask.numpy().astype(bool)
    np.testing.assert_allclose(session.run(None, feed)[0][real], expected[real], rtol=1e-4, atol=1e-4)
