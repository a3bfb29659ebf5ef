"""Checkpoints in the wrappings they come in; strict key checks; nothing unpickled unsafely."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForTokenClassification

from stages import load_checkpoint
from stages.core.errors import UserError
from stages.model.checkpoint import sha256_of
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


def trainer_directory(target: Path, layout: str) -> Path:
    """The normalised model saved as a Trainer saves a `*ForTokenClassification` (keys `deberta.*`, `classifier.*`)."""
    model = AutoModelForTokenClassification.from_pretrained("models/model")
    if layout == "safetensors":
        model.save_pretrained(target)
    elif layout == "sharded safetensors":
        model.save_pretrained(target, max_shard_size="100KB")
        assert (target / "model.safetensors.index.json").is_file() and len(list(target.glob("*.safetensors"))) >= 2
    else:  # pytorch_model.bin, as transformers 4 and Trainer runs before safetensors wrote it
        model.config.save_pretrained(target)
        torch.save(model.state_dict(), target / "pytorch_model.bin")
    return target


@pytest.mark.parametrize("layout", ["safetensors", "sharded safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("kind", ["deberta-v2", "bert"])
def test_a_trainers_save_pretrained_directory_is_a_checkpoint(make_workspace, caplog, kind, layout):
    workspace = make_workspace(kind)
    load_checkpoint.main()
    trainer_directory(workspace.root / "trainer", layout)
    workspace.write_params(model={"checkpoint": "trainer", "output": "models/from_trainer"})
    caplog.set_level(logging.INFO)
    load_checkpoint.main()
    model, spec = load_model_dir(Path("models/from_trainer"))
    for key, value in workspace.model.state_dict().items():
        if not key.startswith("model.pooler."):  # a token classifier has no pooler; it is never run
            assert torch.equal(model.state_dict()[key], value), key
    prefix = {"deberta-v2": "deberta.", "bert": "bert."}[kind]
    assert f"encoder under {prefix!r}, head 'classifier'" in caplog.text
    assert spec.source_sha256 and spec.source_sha256 != sha256_of(Path("model.ckpt"))


def test_a_trainer_directory_with_other_labels_names_the_params(make_workspace):
    workspace = make_workspace("deberta-v2")
    load_checkpoint.main()
    trainer = trainer_directory(workspace.root / "trainer", "safetensors")
    config = json.loads((trainer / "config.json").read_text())
    config["id2label"] = {"0": "O", "1": "B-PER", "2": "I-PER", "3": "B-LOC"}
    (trainer / "config.json").write_text(json.dumps(config))
    workspace.write_params(model={"checkpoint": "trainer"})
    with pytest.raises(
        UserError, match=r"names its labels \['O', 'B-PER', 'I-PER', 'B-LOC'\].*set model\.labels: \[O, B-PER"
    ):
        load_checkpoint.main()
    workspace.write_params(model={"num_labels": 3, "labels": None})
    with pytest.raises(UserError, match=r"directory with 4 labels .* model\.num_labels is 3; set model\.num_labels: 4"):
        load_checkpoint.main()


def renamed(state: dict, encoder: str, head: str) -> dict:
    """The seed's keys (`model.*`, `fc.*`) as a model with other attribute names would save them."""
    names = {"model.": encoder, "fc.": head}
    return {
        next(new + key[len(old) :] for old, new in names.items() if key.startswith(old)): v for key, v in state.items()
    }


@pytest.mark.parametrize(("encoder", "head"), [("backbone.", "classifier."), ("encoder.", "head."), ("", "out.")])
def test_a_custom_model_with_its_own_attribute_names_loads(make_workspace, caplog, encoder, head):
    workspace = make_workspace("deberta-v2")
    torch.save(renamed(workspace.model.state_dict(), encoder, head), "model.ckpt")
    caplog.set_level(logging.INFO)
    load_checkpoint.main()
    model, _ = load_model_dir(Path("models/model"))
    for key, value in workspace.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert f"encoder under {encoder or '(no prefix)'!r}, head {head.rstrip('.')!r}" in caplog.text


def test_ambiguous_checkpoints_name_the_tensors(make_workspace):
    workspace = make_workspace("deberta-v2")
    state = workspace.model.state_dict()
    two_heads = {**state, "aux.weight": state["fc.weight"].clone(), "aux.bias": state["fc.bias"].clone()}
    torch.save(two_heads, "model.ckpt")
    with pytest.raises(UserError, match=r"2 Linear layers .* \(aux\.weight \[4, 32\], fc\.weight \[4, 32\]\)"):
        load_checkpoint.main()
    teacher = {
        **state,
        **{"teacher." + key[len("model.") :]: v for key, v in state.items() if key.startswith("model.")},
    }
    torch.save(teacher, "model.ckpt")
    with pytest.raises(UserError, match=r"holds the encoder twice, under 'model\.' and 'teacher\.'"):
        load_checkpoint.main()
    torch.save({**state, "crf.transitions": torch.zeros(4, 4)}, "model.ckpt")
    with pytest.raises(UserError, match=r"1 unexpected keys: crf\.transitions"):
        load_checkpoint.main()


def test_a_head_json_of_another_format_says_to_run_load_checkpoint_again(make_workspace):
    make_workspace("deberta-v2")
    load_checkpoint.main()
    head = Path("models/model/head.json")
    fields = json.loads(head.read_text())
    del fields["init_seed"]
    head.write_text(json.dumps({**fields, "format": "token-linear/1"}))  # what the previous release wrote
    with pytest.raises(
        UserError, match=r"head\.json is in format 'token-linear/1'.* run the load_checkpoint stage again"
    ):
        load_model_dir(Path("models/model"))
