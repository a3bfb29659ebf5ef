"""Export: both exporters, int32/int64 graphs, the inputs each backbone uses, and self-description."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from stages import export, load_checkpoint
from stages.bench import choice
from stages.core.errors import UserError
from stages.core.params import load_params
from stages.graph.session import onnx_logits
from stages.graph.verdict import model_digests
from stages.model.directory import load_model_dir
from stages.model.token_model import torch_logits
from tests.conftest import REPO
from tools.generate.support_matrix import EXPECTED_INPUTS


def export_workspace(make_workspace, kind: str, exporter: str, input_dtype: str):
    workspace = make_workspace(kind)
    opset = 18 if exporter == "dynamo" else 14
    workspace.write_params(export={"exporter": exporter, "input_dtype": input_dtype, "opset": opset})
    load_checkpoint.main()
    export.main()
    return workspace


def random_batch(rng: np.random.Generator, batch: int, length: int, vocab: int) -> dict[str, np.ndarray]:
    mask = np.ones((batch, length), dtype=np.int64)
    mask[0, max(1, length // 2) :] = 0  # row 0 is padded
    return {
        "input_ids": rng.integers(5, vocab, (batch, length)),
        "attention_mask": mask,
        "token_type_ids": rng.integers(0, 2, (batch, length)) * mask,
    }


@pytest.mark.parametrize(("kind", "exporter"), [("deberta-v2", "dynamo"), ("bert", "torchscript")])
def test_exported_graph_matches_torch_away_from_the_dummy_shape(make_workspace, kind, exporter):
    workspace = export_workspace(make_workspace, kind, exporter, "int64")
    model, _ = load_model_dir(workspace.root / "models/model")
    session = ort.InferenceSession("models/onnx/model.onnx", providers=["CPUExecutionProvider"])
    assert [value.name for value in session.get_inputs()] == EXPECTED_INPUTS[kind]
    rng = np.random.default_rng(0)
    for batch, length in [(1, 1), (3, 7), (5, 64), (2, 128)]:
        arrays = random_batch(rng, batch, length, model.config.vocab_size)
        mask = arrays["attention_mask"].astype(bool)
        np.testing.assert_allclose(
            onnx_logits(session, arrays)[mask], torch_logits(model, arrays)[mask], atol=1e-4, rtol=1e-3
        )


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_int32_graph_inputs_as_in_the_seed(make_workspace, exporter):
    workspace = export_workspace(make_workspace, "deberta-v2", exporter, "int32")
    graph = onnx.load("models/onnx/model.onnx")
    assert {value.type.tensor_type.elem_type for value in graph.graph.input} == {onnx.TensorProto.INT32}
    model, _ = load_model_dir(workspace.root / "models/model")
    session = ort.InferenceSession("models/onnx/model.onnx", providers=["CPUExecutionProvider"])
    arrays = random_batch(np.random.default_rng(1), 2, 9, model.config.vocab_size)  # int64 arrays: the feed casts
    real = arrays["attention_mask"].astype(bool)  # pad positions are never read (stages.graph.rewrites)
    np.testing.assert_allclose(
        onnx_logits(session, arrays)[real], torch_logits(model, arrays)[real], atol=1e-4, rtol=1e-3
    )


def test_bert_token_type_ids_change_the_output_and_the_graph_follows(make_workspace):
    workspace = export_workspace(make_workspace, "bert", "dynamo", "int64")
    model, _ = load_model_dir(workspace.root / "models/model")
    session = ort.InferenceSession("models/onnx/model.onnx", providers=["CPUExecutionProvider"])
    arrays = random_batch(np.random.default_rng(2), 2, 12, model.config.vocab_size)
    zeros = {**arrays, "token_type_ids": np.zeros_like(arrays["token_type_ids"])}
    assert np.abs(torch_logits(model, arrays) - torch_logits(model, zeros)).max() > 1e-3
    np.testing.assert_allclose(onnx_logits(session, arrays), torch_logits(model, arrays), atol=1e-4, rtol=1e-3)


def test_onnx_directory_describes_itself_and_the_log_only_what_happened(make_workspace, caplog):
    with caplog.at_level(logging.INFO):
        export_workspace(make_workspace, "deberta-v2", "dynamo", "int32")
    assert "torchvision" not in caplog.text, "no line per torchvision op the dynamo exporter skips"
    assert "wrote models/onnx/model.onnx: dynamo exporter, opset 18" in caplog.text
    sidecar = json.loads(Path("models/onnx/model.json").read_text(encoding="utf-8"))
    props = {entry.key: entry.value for entry in onnx.load("models/onnx/model.onnx").metadata_props}
    assert sidecar["exporter"] == props["exporter"] == "dynamo"
    assert sidecar["opset"] == 18 and json.loads(props["opset"]) == 18
    assert [(entry["name"], entry["dtype"]) for entry in sidecar["inputs"]] == [
        ("input_ids", "int32"),
        ("attention_mask", "int32"),
    ]
    assert sidecar["inputs"][0]["shape"] == ["batch", "sequence"]
    assert sidecar["outputs"][0]["shape"][2] == 4
    assert sidecar["labels"] == ["O", "NUMBER", "CAPITALIZED", "CJK"]
    assert sidecar["max_length"] == 128 and sidecar["truncation_side"] == "left"
    assert {"torch", "transformers", "onnx"} <= set(sidecar["versions"])
    assert json.loads(props["labels"]) == sidecar["labels"]
    tokenizer_files = {"tokenizer.json", "tokenizer_config.json"}
    assert tokenizer_files <= {path.name for path in Path(load_params().export.output).iterdir()}
    graph_bytes = Path("models/onnx/model.onnx").read_bytes()  # the same model from any checkout: the same bytes
    assert b"stack_trace" not in graph_bytes and str(REPO).encode() not in graph_bytes


def test_dynamo_opset_it_cannot_write_is_an_error_not_a_silent_downgrade(make_workspace):
    workspace = make_workspace("deberta-v2")
    workspace.write_params(export={"exporter": "dynamo", "opset": 14})
    load_checkpoint.main()
    with pytest.raises(UserError, match=r"export\.opset = 14"):
        export.main()


def test_a_bug_in_the_projects_own_rewrite_keeps_its_traceback(make_workspace):
    workspace = make_workspace("deberta-v2")
    workspace.write_params(export={"exporter": "dynamo", "opset": 18})
    load_checkpoint.main()
    probe = (
        "from stages.graph import rewrites\n"
        "rewrites.skew = None  # now a call in stages/graph/rewrites.py fails: a bug of ours\n"
        "from stages import export; from stages.core.runner import run_stage; run_stage(export.main)"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=workspace.root, env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 1 and "Traceback" in result.stderr, result.stderr[-2000:]
    assert "stages/graph/rewrites.py" in result.stderr and "error: the dynamo exporter" not in result.stderr


@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_two_exports_of_the_same_inputs_are_the_same_bytes(make_workspace, monkeypatch, exporter):
    """Under `runtime.backend: auto` and an int8 search too: what they measured goes to the export's report, so the
    served files (which key the verdict and the score store) stay the same bytes."""
    workspace = make_workspace("bert")
    workspace.write_params(export={"precision": "int8", "exporter": exporter}, runtime={"backend": "auto"})
    load_checkpoint.main()
    clock = iter(range(1, 100))  # every measurement differs; onnxruntime stays the fastest
    monkeypatch.setattr(
        choice,
        "time_runs",
        lambda runners, _: {name: float(next(clock)) * (1 + name.startswith("openvino")) for name in runners},
    )
    exports, reports = [], []
    for _ in range(2):
        export.main()
        exports.append(model_digests(Path("models/onnx")))
        reports.append(json.loads(Path("metrics/export.json").read_text()))
    assert exports[0] == exports[1] and "model.onnx" in exports[0]
    assert reports[0]["serving"]["measured_texts_per_s"] != reports[1]["serving"]["measured_texts_per_s"]
    assert reports[0]["search_seconds"] > 0
    described = json.loads(Path("models/onnx/model.json").read_text())
    assert set(described["serving"]) == {"backend", "precision", "cpu"}
    assert "search_seconds" not in described["precision_conversion"]
