"""Your own head (`model.head`): imported from `model.head_code` (logged), built from `model.head_args`, loaded strictly,
checked to give per-token scores, and rebuilt downstream only from the code it was built with. The heads here are as
initialised on a tiny backbone; `tests/test_pipeline_heads.py` runs trained ones through `dvc repro`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoConfig

from stages import load_checkpoint
from stages.core.errors import UserError
from stages.model.crf import find_crf
from stages.model.custom_head import HeadModel, import_head
from stages.model.directory import load_model_dir
from tests.conftest import REPO
from tests.custom_heads import checkpoint_state

HEAD_CODE = REPO / "heads"
HIDDEN = 32  # tests.backbones' deberta-v2
CRF_HEAD = {"head": "linear_crf:LinearCrfHead", "head_args": {"hidden_size": HIDDEN, "num_labels": 4}}
LSTM_HEAD = {"head": "bilstm:BiLstmHead", "head_args": {"hidden_size": HIDDEN, "lstm_size": 8, "num_labels": 4}}


def head_checkpoint(workspace, head: dict, code: Path = HEAD_CODE) -> dict[str, torch.Tensor]:
    """The workspace's encoder with `head` as initialised, saved the seed's way (the encoder under `model.`, the
    head's tensors under its own names) to model.ckpt, and the params naming the head; returns the saved state."""
    torch.manual_seed(1)
    head_class = import_head(head["head"], code)
    model = HeadModel(AutoConfig.from_pretrained(workspace.root / "backbone"), head_class(**head["head_args"]), 4)
    model.model.load_state_dict(workspace.model.model.state_dict())
    state = checkpoint_state(model)
    torch.save(state, "model.ckpt")
    workspace.write_params(model={**head, "head_code": str(code)})
    return state


@pytest.mark.parametrize("head", [CRF_HEAD, LSTM_HEAD], ids=["crf", "bilstm"])
def test_a_head_saved_the_seeds_way_loads_strictly_and_says_what_it_is(make_workspace, caplog, head):
    workspace = make_workspace("deberta-v2")
    state = head_checkpoint(workspace, head)
    with caplog.at_level(logging.WARNING):
        load_checkpoint.main()
    assert f"model.head = {head['head']}: importing and running your code from {HEAD_CODE}" in caplog.text
    model, spec = load_model_dir(Path("models/model"))
    assert isinstance(model, HeadModel)
    assert spec.head == head["head"] and spec.head_args == head["head_args"] and len(spec.head_code_sha256) == 64
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key if key.startswith("model.") else f"head.{key}"], value), key
    written = json.loads(Path("models/model/head.json").read_text())
    assert written["head"] == head["head"] and written["head_code"] == str(HEAD_CODE)


def test_a_missing_and_a_left_over_head_tensor_are_listed(make_workspace):
    workspace = make_workspace("deberta-v2")
    state = head_checkpoint(workspace, CRF_HEAD)
    del state["crf.transitions"]
    state["crf.extra"] = torch.zeros(1)
    torch.save(state, "model.ckpt")
    with pytest.raises(UserError) as error:
        load_checkpoint.main()
    assert "1 missing keys: head.crf.transitions" in str(error.value)
    assert "1 unexpected keys: crf.extra" in str(error.value)


def test_head_args_of_other_sizes_say_so(make_workspace):
    workspace = make_workspace("deberta-v2")
    head_checkpoint(workspace, LSTM_HEAD)
    workspace.write_params(model={"head_args": {**LSTM_HEAD["head_args"], "lstm_size": 16}})
    with pytest.raises(UserError, match=r"shape of head\.lstm\.\S+: checkpoint .* -> .* check model\.head_args"):
        load_checkpoint.main()
    workspace.write_params(model={"head_args": {"hidden_size": HIDDEN}})
    with pytest.raises(UserError, match=r"model\.head_args \{'hidden_size': 32\} do not fit bilstm:BiLstmHead"):
        load_checkpoint.main()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bilstm.BiLstmHead", r"is not a class name: write it as module:Class"),
        ("no_such_module:Head", r"no module no_such_module in model\.head_code"),
        ("bilstm:NoSuchHead", r"has no torch\.nn\.Module class NoSuchHead"),
        ("bilstm:pack_padded_sequence", r"has no torch\.nn\.Module class pack_padded_sequence"),
    ],
)
def test_a_head_that_cannot_be_imported_says_why(make_workspace, name, message):
    workspace = make_workspace("deberta-v2")
    head_checkpoint(workspace, LSTM_HEAD)
    workspace.write_params(model={"head": name})
    with pytest.raises(UserError, match=message):
        load_checkpoint.main()


def test_a_head_whose_output_is_not_per_token_scores_is_refused(make_workspace, tmp_path):
    workspace = make_workspace("deberta-v2")
    code = tmp_path / "my_heads"
    code.mkdir()
    (code / "pooled.py").write_text(
        "import torch\n\n\nclass PooledHead(torch.nn.Module):\n"
        "    def __init__(self, hidden_size, num_labels):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(hidden_size, num_labels)\n\n"
        "    def forward(self, hidden_states, attention_mask):\n"
        "        return self.fc(hidden_states[-1][:, 0])\n",
        encoding="utf-8",
    )
    head_checkpoint(
        workspace, {"head": "pooled:PooledHead", "head_args": {"hidden_size": HIDDEN, "num_labels": 4}}, code
    )
    with pytest.raises(UserError, match=r"returns a torch\.float32 tensor \[2, 4\] .* per-token scores .* \[2, 7, 4\]"):
        load_checkpoint.main()


def test_the_model_directory_is_rebuilt_only_from_the_code_it_was_built_with(make_workspace, tmp_path):
    workspace = make_workspace("deberta-v2")
    code = tmp_path / "my_heads"
    code.mkdir()
    (code / "linear_crf.py").write_bytes((HEAD_CODE / "linear_crf.py").read_bytes())
    head_checkpoint(workspace, CRF_HEAD, code)
    load_checkpoint.main()
    load_model_dir(Path("models/model"))
    with (code / "linear_crf.py").open("a", encoding="utf-8") as file:
        file.write("\n# edited\n")
    with pytest.raises(UserError, match=r"is not the code models/model was built with .* run the load_checkpoint"):
        load_model_dir(Path("models/model"))


def test_a_crf_is_found_by_pytorch_crfs_names_and_checked():
    class Crf(nn.Module):
        def __init__(self, labels: int, parts: tuple[str, ...]) -> None:
            super().__init__()
            for part in parts:
                shape = (labels, labels) if part == "transitions" else (labels,)
                setattr(self, part, nn.Parameter(torch.zeros(shape)))

    whole = ("transitions", "start_transitions", "end_transitions")
    assert find_crf(nn.ModuleDict({"fc": nn.Linear(2, 4), "crf": Crf(4, whole)}), 4) == "crf"
    assert find_crf(nn.Linear(2, 4), 4) is None
    with pytest.raises(UserError, match=r"the CRF in crf has transitions but no end_transitions"):
        find_crf(nn.ModuleDict({"crf": Crf(4, whole[:2])}), 4)
    with pytest.raises(UserError, match=r"the CRF crf has transitions \[5, 5\].* not a CRF over model\.num_labels = 4"):
        find_crf(nn.ModuleDict({"crf": Crf(5, whole)}), 4)
    with pytest.raises(UserError, match=r"the head has 2 CRFs \(a, b\)"):
        find_crf(nn.ModuleDict({"a": Crf(4, whole), "b": Crf(4, whole)}), 4)
