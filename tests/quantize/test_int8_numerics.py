"""The int8 search's graph tools: simulated int8 equals onnxruntime's, smoothing keeps fp32, MatMuls carry module names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages.core.cpu import has_vnni
from stages.core.params import ExportParams, load_params
from stages.graph.exporter import export_graph
from stages.graph.matmuls import weight_matmuls, word_embedding_gather
from stages.graph.precision import prepare_for_quantization, quantize_prepared
from stages.model.token_model import CustomModel
from stages.quantize.sensitivity import fake_quantized_activation, fake_quantized_weight, simulated_int8_errors
from stages.quantize.smoothing import candidate_scales, channel_ranges, smooth, worth_smoothing
from tests.backbones import tiny_config
from tests.conftest import REPO

HIDDEN = 16


def save(graph: onnx.GraphProto, path: Path) -> Path:
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def activations(rows: int, seed: int = 0) -> np.ndarray:
    """Rows of HIDDEN channels, two of them 50 times the others, as outlier channels are."""
    values = np.random.default_rng(seed).normal(size=(rows, HIDDEN)).astype(np.float32)
    values[:, [2, 9]] *= 50.0
    return values


def run(path: Path, values: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": values})[0]


@pytest.mark.parametrize("target", ["vnni", "no_vnni"])
def test_simulated_int8_is_what_onnxruntime_computes(tmp_path, target):
    weight = np.random.default_rng(1).normal(size=(HIDDEN, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")],
        "one_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])],
        [numpy_helper.from_array(weight, "w")],
    )
    fp32 = save(graph, tmp_path / "fp32.onnx")
    quantize_prepared(fp32, tmp_path / "int8.onnx", target)
    values = activations(64)
    simulated = fake_quantized_activation(values) @ fake_quantized_weight(weight, target)
    served = run(tmp_path / "int8.onnx", values)
    if target == "vnni" and not has_vnni():
        # Without VNNI, onnxruntime's u8s8 kernels add pairs of uint8 x int8 products in int16 and saturate: 8-bit
        # weights lose outputs here, which is why `no_vnni` quantizes weights to 7 bits (reduce_range).
        assert not np.allclose(served, simulated, rtol=1e-4, atol=1e-3)
        return
    np.testing.assert_allclose(served, simulated, rtol=1e-4, atol=1e-3)
    assert np.abs(simulated - values @ weight).max() > 0.1  # the outliers really cost resolution
    model = onnx.load(str(fp32))
    runtime = load_params(REPO / "params.yaml").runtime.on_cpu(1)
    (errors,) = simulated_int8_errors(fp32, weight_matmuls(model, model), [{"x": values}], runtime, target)
    measured = np.linalg.norm(served - values @ weight) / np.linalg.norm(values @ weight)
    assert errors["matmul"] == pytest.approx(measured, rel=1e-3)


def test_smoothing_keeps_fp32_and_folds_into_a_norm_read_by_matmuls_alone(tmp_path):
    rng = np.random.default_rng(2)
    weights = {name: rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32) for name in ("wq", "wk", "wo")}
    norm = {name: np.ones(HIDDEN, np.float32) for name in ("scale", "bias")}
    norm["scale"][[2, 9]] = 50.0  # outlier channels, as a real encoder's norm makes them
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["normed"], name="norm", axis=-1),
        helper.make_node("MatMul", ["normed", "wq"], ["q"], name="q"),  # the norm feeds two MatMuls alone: folds
        helper.make_node("MatMul", ["normed", "wk"], ["k"], name="k"),
        helper.make_node("Add", ["q", "k"], ["h"], name="sum"),
        helper.make_node("MatMul", ["h", "wo"], ["o"], name="o"),  # h also feeds the residual: a Mul divides it
        helper.make_node("Add", ["o", "h"], ["y"], name="residual"),
    ]
    initializers = [numpy_helper.from_array(value, name) for name, value in {**weights, **norm}.items()]
    graph = helper.make_graph(
        nodes,
        "norm_and_residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, HIDDEN])],
        initializers,
    )
    plain = save(graph, tmp_path / "plain.onnx")
    model = onnx.load(str(plain))
    matmuls = weight_matmuls(model, model)
    runtime = load_params(REPO / "params.yaml").runtime.on_cpu(1)
    feeds = [{"x": activations(32, seed)} for seed in range(3)]
    ranges = channel_ranges(plain, ["normed", "h"], feeds, runtime)
    scales = candidate_scales(plain, matmuls, ranges)
    before, after = simulated_int8_errors(plain, matmuls, feeds, runtime, "vnni", [{}, scales])
    assert "normed" in worth_smoothing(matmuls, before, after)  # the outliers' input gains; what it did is measured
    report = smooth(plain, tmp_path / "smoothed.onnx", matmuls, scales)
    assert (report["inputs"], report["folded_into_norms"], report["mul_nodes"]) == (2, 1, 1)
    values = activations(32, seed=7)
    np.testing.assert_allclose(run(tmp_path / "smoothed.onnx", values), run(plain, values), rtol=1e-4, atol=1e-3)
    migrated = weight_matmuls(onnx.load(str(tmp_path / "smoothed.onnx")), model)
    after = channel_ranges(
        tmp_path / "smoothed.onnx", sorted({matmul.activation for matmul in migrated}), feeds, runtime
    )
    before_ratio = ranges["normed"].max() / np.median(ranges["normed"])
    after_ratio = after[migrated[0].activation].max() / np.median(after[migrated[0].activation])
    assert before_ratio > 20 and after_ratio < before_ratio / 4, (before_ratio, after_ratio)


@pytest.mark.parametrize(
    ("kind", "exporter", "modules"),
    [
        # the position projections that shared query_proj's weight (query_proj#2) are constants since the attention
        # rewrite (stages.graph.rewrites)
        (
            "deberta-v2",
            "dynamo",
            {"fc", "model.encoder.layer.0.attention.self.query_proj", "model.encoder.layer.1.output.dense"},
        ),
        ("bert", "torchscript", {"fc", "model.encoder.layer.1.attention.self.value"}),
    ],
)
def test_weight_matmuls_are_named_after_their_modules(tmp_path, monkeypatch, kind, exporter, modules):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    model = CustomModel(tiny_config(kind, 100, 0), num_labels=4, classifier_dropout=0.1).eval()
    params = ExportParams(
        exporter, 18 if exporter == "dynamo" else 17, "int32", "fp32", "auto", 0.5, 2, 6, None, "onnx"
    )
    export_graph(model, params, tmp_path / "fp32.onnx")
    prepare_for_quantization(tmp_path / "fp32.onnx", tmp_path / "prepared.onnx")
    prepared = onnx.load(str(tmp_path / "prepared.onnx"))
    found = weight_matmuls(prepared, onnx.load(str(tmp_path / "fp32.onnx")))
    assert modules <= {matmul.module for matmul in found}, [matmul.module for matmul in found]
    assert [matmul.module for matmul in found if matmul.is_head] == ["fc"]
    assert word_embedding_gather(prepared) is not None  # int32 ids reach it through a Cast
    assert not list(Path.cwd().iterdir())  # a failed symbolic shape pass leaves nothing in the working directory
