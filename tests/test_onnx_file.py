"""ONNX files users already hold (`export.onnx_file`): adopted, made self-describing, checked by parity, scored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pandas as pd
import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from stages import export, infer, load_checkpoint, parity
from stages.core.errors import CheckFailed, UserError
from stages.model.checkpoint import sha256_of
from tests.backbones import piece_rule_accuracy
from tests.conftest import REPO

SEED_NAMES = ["input_ids", "token_type_ids", "attention_mask"]
SEED_AXES = {
    **{name: {0: "batch_size", 1: "sequence"} for name in SEED_NAMES},
    "logits": {0: "batch_size", 1: "sequence"},
}


class SeedCustomModel(nn.Module):
    """The notes' CustomModel, built from the backbone's config (the notes download pretrained weights first), with
    the eager attention of the notes' transformers 4.23 (opset 13 cannot express torch's fused attention)."""

    def __init__(self, config, classifier_dropout, num_labels) -> None:
        super().__init__()
        self.config = config
        self.model = AutoModel.from_config(config, attn_implementation="eager")
        self.fc_dropout = nn.Dropout(classifier_dropout)
        self.fc = nn.Linear(self.config.hidden_size, num_labels)

    def forward(self, input_ids, token_type_ids, attention_mask):
        outputs = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        return self.fc(self.fc_dropout(outputs[0]))


def seed_export(workspace, target: Path, form: str, dynamo: bool = False, head_shift: float = 0.0) -> Path:
    """The notes' export call on the workspace's checkpoint: int32 dummies, opset 13, dict or tuple inputs.
    `dynamo=False` is the TorchScript exporter the notes' torch 1.12 ran; torch 2.13 defaults to dynamo."""
    state = dict(workspace.model.state_dict())
    model = SeedCustomModel(workspace.model.config, 0.2, state["fc.weight"].shape[0])
    state["fc.bias"] = state["fc.bias"] + head_shift
    model.load_state_dict(state)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(workspace.root / "backbone", truncation_side="left")
    encoded = tokenizer(  # the notes' DebertaV2Tokenizer returns token_type_ids unasked; these test tokenizers do not
        "This is a sample.", truncation=True, max_length=512, return_tensors="pt", return_token_type_ids=True
    )
    dummy_input = {name: encoded[name].to(torch.int32) for name in SEED_NAMES}
    args = dummy_input if form == "dict" else tuple(dummy_input.values())
    torch.onnx.export(
        model, args, str(target), export_params=True, opset_version=13, do_constant_folding=True,
        input_names=SEED_NAMES, output_names=["logits"], dynamic_axes=SEED_AXES, dynamo=dynamo,
    )  # fmt: skip
    return target


def adopt(workspace, onnx_file: str) -> dict:
    load_checkpoint.main()
    workspace.write_params(export={"onnx_file": onnx_file})
    export.main()
    return json.loads(Path("models/onnx/model.json").read_text())


@pytest.mark.parametrize(("kind", "form"), [("deberta-v2", "dict"), ("deberta-v2", "tuple"), ("bert", "tuple")])
def test_an_onnx_file_from_the_seeds_code_passes_parity_and_scores(make_workspace, kind, form):
    workspace = make_workspace(kind)
    seed_export(workspace, workspace.root / "seed.onnx", form)
    sidecar = adopt(workspace, "seed.onnx")
    assert sidecar["exporter"] == "onnx_file" and sidecar["opset"] == 13
    assert sidecar["source_onnx_sha256"] == sha256_of(workspace.root / "seed.onnx")
    uses_types = kind == "bert"  # DeBERTa-v2 ignores token types, and the TorchScript exporter drops the input
    expected = [
        ("input_ids", "int32"),
        *([("token_type_ids", "int32")] if uses_types else []),
        ("attention_mask", "int32"),
    ]
    assert [(entry["name"], entry["dtype"]) for entry in sidecar["inputs"]] == expected
    parity.main()
    assert json.loads(Path("metrics/parity.json").read_text())["passed"]
    infer.main()
    source = pd.read_parquet(workspace.params["infer"]["input"])
    assert piece_rule_accuracy(source, pd.read_parquet(workspace.params["infer"]["output"])) >= 0.99


@pytest.mark.slow
def test_the_seeds_call_as_torch_2_13_runs_it_declares_an_unused_token_type_ids(make_workspace):
    workspace = make_workspace("deberta-v2")
    # The notes' tuple call with torch 2.13's default exporter (its dict form fails there: KeyError -1 in torch).
    seed_export(workspace, workspace.root / "seed.onnx", "tuple", dynamo=True)
    sidecar = adopt(workspace, "seed.onnx")
    assert "token_type_ids" in [entry["name"] for entry in sidecar["inputs"]]
    parity.main()
    assert json.loads(Path("metrics/parity.json").read_text())["passed"]


def test_an_onnx_file_with_external_data_is_copied_whole(make_workspace, tmp_path):
    workspace = make_workspace("deberta-v2")
    graph = onnx.load(str(seed_export(workspace, tmp_path / "seed.onnx", "tuple")))
    exported = workspace.root / "exported"
    exported.mkdir()
    onnx.save_model(
        graph, str(exported / "seed.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    external = onnx.load(str(exported / "seed.onnx"), load_external_data=False).graph.initializer
    assert any(item.data_location == onnx.TensorProto.EXTERNAL for item in external)
    adopt(workspace, "exported/seed.onnx")
    assert sorted(path.name for path in Path("models/onnx").glob("model.onnx*")) == ["model.onnx", "model.onnx.data"]
    parity.main()
    assert json.loads(Path("metrics/parity.json").read_text())["passed"]


def test_an_onnx_file_of_other_weights_fails_parity_and_names_the_criterion(make_workspace):
    workspace = make_workspace("deberta-v2")
    seed_export(workspace, workspace.root / "seed.onnx", "dict", head_shift=0.5)
    adopt(workspace, "seed.onnx")
    with pytest.raises(CheckFailed, match=r"parity failed.*\n.*rows: \d+ of \d+ .*beyond atol"):
        parity.main()
    assert json.loads(Path("metrics/parity.json").read_text())["passed"] is False


def exit_and_errors(root: Path) -> tuple[int, list[str], str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.export"], cwd=root, env=environment, capture_output=True, text=True, timeout=600
    )
    return result.returncode, [line for line in result.stderr.splitlines() if line.startswith("error:")], result.stderr


def test_an_onnx_file_with_other_labels_or_truncated_exits_2_in_one_line(make_workspace):
    workspace = make_workspace("deberta-v2")
    load_checkpoint.main()
    workspace.write_params(export={"onnx_file": "seed.onnx"})
    five_labels = workspace.model
    five_labels.fc = nn.Linear(five_labels.config.hidden_size, 5)
    seed_export(workspace, workspace.root / "seed.onnx", "tuple")
    code, errors, stderr = exit_and_errors(workspace.root)
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "does not fit the checkpoint's model" in errors[0] and "[batch, sequence, 4]" in errors[0]
    data = (workspace.root / "seed.onnx").read_bytes()
    (workspace.root / "seed.onnx").write_bytes(data[: len(data) // 3])
    code, errors, stderr = exit_and_errors(workspace.root)
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "export.onnx_file = seed.onnx cannot be read as ONNX" in errors[0]
    with pytest.raises(UserError, match=r"export\.onnx_file = missing\.onnx not found"):
        workspace.write_params(export={"onnx_file": "missing.onnx"})
        export.main()
