"""Checkpoints in the wrappings they come in; strict key checks; nothing unpickled unsafely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stages import load_checkpoint
from stages.core.errors import UserError
from stages.model.directory import load_model_dir


def wrapped(state: dict, wrapping: str):
    if wrapping == "lightning":
        return {"state_dict": {f"model.{key}": value for key, value in state.items()}, "epoch": 16, "global_step": 100}
    if wrapping == "ddp":
        return {f"module.{key}": value for key, value in state.items()}
    if wrapping == "compiled":
        return {f"_orig_mod.{key}": value for key, value in state.items()}
    if wrapping == "ddp+compiled":
        return {f"module._orig_mod.{key}": value for key, value in state.items()}
    return state


@pytest.mark.parametrize("wrapping", ["plain", "lightning", "ddp", "compiled", "ddp+compiled"])
def test_wrapped_checkpoints_load_to_the_same_weights(make_workspace, wrapping):
    workspace = make_workspace("deberta-v2")
    torch.save(wrapped(workspace.model.state_dict(), wrapping), "model.ckpt")
    load_checkpoint.main()
    model, spec = load_model_dir(Path("models/model"))
    for key, value in workspace.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert spec.input_names == ("input_ids", "attention_mask")
    assert len(spec.source_sha256) == 64


def test_safetensors_checkpoint(make_workspace):
    workspace = make_workspace("bert")
    save_file({key: value.contiguous() for key, value in workspace.model.state_dict().items()}, "model.safetensors")
    workspace.write_params(model={"checkpoint": "model.safetensors"})
    load_checkpoint.main()
    _, spec = load_model_dir(Path("models/model"))
    assert spec.input_names == ("input_ids", "attention_mask", "token_type_ids")


def test_head_with_other_label_count_names_num_labels(make_workspace):
    workspace = make_workspace("deberta-v2")
    state = workspace.model.state_dict()
    state["fc.weight"] = torch.zeros(5, state["fc.weight"].shape[1])
    state["fc.bias"] = torch.zeros(5)
    torch.save(state, "model.ckpt")
    with pytest.raises(
        UserError, match=r"shape of fc\.weight: checkpoint \[5, 32\] vs model \[4, 32\] -> .* set model\.num_labels: 5"
    ):
        load_checkpoint.main()


def test_missing_and_unexpected_keys_are_listed(make_workspace):
    workspace = make_workspace("deberta-v2")
    state = workspace.model.state_dict()
    del state["fc.bias"]
    state["classifier.extra"] = torch.zeros(1)
    torch.save(state, "model.ckpt")
    with pytest.raises(UserError) as error:
        load_checkpoint.main()
    assert "1 missing keys: fc.bias" in str(error.value)
    assert "1 unexpected keys: classifier.extra" in str(error.value)


class TrainingConfig:
    """Stands for the arbitrary objects training scripts pickle next to their weights."""


def test_checkpoint_needing_code_to_unpickle_is_refused(make_workspace):
    workspace = make_workspace("deberta-v2")
    torch.save({"state_dict": workspace.model.state_dict(), "config": TrainingConfig()}, "model.ckpt")
    with pytest.raises(UserError, match=r"needs arbitrary unpickling.*refused"):
        load_checkpoint.main()


def test_truncated_checkpoint_names_the_file(make_workspace):
    make_workspace("deberta-v2")
    data = Path("model.ckpt").read_bytes()
    Path("model.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"model\.ckpt is truncated or corrupted"):
        load_checkpoint.main()


def test_missing_checkpoint_and_backbone_name_the_param(make_workspace):
    workspace = make_workspace("deberta-v2")
    workspace.write_params(model={"checkpoint": "nope.ckpt"})
    with pytest.raises(UserError, match=r"checkpoint not found: nope\.ckpt \(set model\.checkpoint"):
        load_checkpoint.main()
    workspace.write_params(model={"checkpoint": "model.ckpt", "backbone": "no/such-model"})
    with pytest.raises(UserError, match=r"cannot load backbone 'no/such-model' \(model\.backbone\)"):
        load_checkpoint.main()


def test_max_length_beyond_position_embeddings(make_workspace):
    workspace = make_workspace("bert")
    workspace.write_params(model={"max_length": 512})
    with pytest.raises(UserError, match=r"model\.max_length = 512 exceeds .* \(128 positions\)"):
        load_checkpoint.main()


def test_output_is_self_contained_and_safetensors_only(make_workspace):
    make_workspace("deberta-v2")
    load_checkpoint.main()
    names = {path.name for path in Path("models/model").iterdir()}
    assert {"model.safetensors", "config.json", "head.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(name.endswith((".ckpt", ".bin", ".pt")) for name in names)
