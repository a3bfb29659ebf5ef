"""Reading checkpoints safely, whatever holds them, and comparing their keys with the model's.

Handles a plain `state_dict` (the seed's `torch.save(model.state_dict())`), a dict holding a
`state_dict` (PyTorch Lightning, `{"model_state_dict": ...}`), `.safetensors` files, and a
`save_pretrained` directory (a Trainer's output: `model.safetensors`, `pytorch_model.bin`, or shards with
their index). Pickles are read with `weights_only=True`: nothing in a checkpoint can run code. Which
tensors are the encoder and which the head is `stages.model.state_mapping`'s business.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.core.errors import UserError

# A save_pretrained directory's weights, in the order transformers prefers them: one file, or shards and their index.
DIRECTORY_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass(frozen=True)
class KeyReport:
    """How a checkpoint's keys compare with the model's."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched_shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # key, checkpoint, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched_shapes)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks; of a checkpoint directory, of its weight files' names and bytes."""
    digest = hashlib.sha256()
    for file in weight_files(path) if path.is_dir() else [path]:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weight_files(directory: Path) -> list[Path]:
    """The files holding a `save_pretrained` directory's weights: one file, or the shards its index names."""
    for name in DIRECTORY_WEIGHTS:
        path = directory / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as error:
            raise UserError(f"checkpoint index {path} cannot be read ({error}); copy or save it again") from None
        missing = [shard for shard in shards if not (directory / shard).is_file()]
        if missing:
            raise UserError(f"checkpoint index {path} names shards that are not there: {', '.join(missing[:4])}")
        return [directory / shard for shard in shards]
    raise UserError(
        f"checkpoint directory {directory} holds no weights (model.checkpoint): expected one of "
        f"{', '.join(DIRECTORY_WEIGHTS)}, as save_pretrained writes them"
    )


def check_directory_labels(checkpoint: Path, num_labels: int, labels: tuple[str, ...] | None) -> None:
    """A `save_pretrained` directory's config.json must have `model.num_labels` labels, named as `model.labels`."""
    config_file = checkpoint / "config.json"
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    names = [id2label[key] for key in sorted(id2label, key=int)]
    count = len(names) or config.get("num_labels")
    if count is not None and count != num_labels:
        raise UserError(
            f"checkpoint {checkpoint} is a token-classification directory with {count} labels ({config_file.name}: "
            f"{names or 'num_labels'}) but model.num_labels is {num_labels}; set model.num_labels: {count}"
        )
    default = [f"LABEL_{index}" for index in range(num_labels)]
    if names and names != default and names != list(labels or default):
        raise UserError(
            f"checkpoint {checkpoint} names its labels {names} ({config_file.name} id2label) but model.labels is "
            f"{list(labels) if labels else None}; set model.labels: [{', '.join(names)}]"
        )


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint (a file, or a save_pretrained directory) into one flat tensor mapping, refusing anything
    that needs unpickling code."""
    if path.is_dir():
        state: dict[str, torch.Tensor] = {}
        for file in weight_files(path):
            state.update(read_checkpoint_file(file))
        return state
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (set model.checkpoint in params.yaml)")
    return read_checkpoint_file(path)


def read_checkpoint_file(path: Path) -> dict[str, torch.Tensor]:
    """One checkpoint file: safetensors, or a pickle read with `weights_only=True`."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as error:
            raise UserError(f"checkpoint {path} is not a readable safetensors file ({error}); re-save it") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(
            f"checkpoint {path} needs arbitrary unpickling, which could run code, so it is refused "
            f"({str(error).splitlines()[0]}). Convert it where you trust it: "
            "`torch.save(torch.load(path, weights_only=False)['state_dict'], 'clean.ckpt')` "
            "or save the weights with safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise UserError(
            f"checkpoint {path} is truncated or corrupted ({str(error).splitlines()[0]}); copy or save it again"
        ) from None
    return _find_state_dict(loaded, path)


def _find_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return dict(loaded)
    if isinstance(loaded, Mapping):
        for key in NESTED_STATE_KEYS:
            if key in loaded:
                return _find_state_dict(loaded[key], path)
    raise UserError(
        f"checkpoint {path} holds no state_dict: found {type(loaded).__name__}"
        + (f" with keys {sorted(map(str, loaded))[:10]}" if isinstance(loaded, Mapping) else "")
        + "; save it with torch.save(model.state_dict(), path)"
    )


def compare_keys(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> KeyReport:
    """Missing, unexpected and shape-mismatched keys between a checkpoint and a model."""
    mismatched = tuple(
        (key, tuple(state[key].shape), tuple(model_state[key].shape))
        for key in sorted(state.keys() & model_state.keys())
        if state[key].shape != model_state[key].shape
    )
    return KeyReport(
        missing=tuple(sorted(model_state.keys() - state.keys())),
        unexpected=tuple(sorted(state.keys() - model_state.keys())),
        mismatched_shapes=mismatched,
    )


def describe_mismatch(report: KeyReport, checkpoint: Path) -> str:
    """One message listing every key problem, with the param to change where it is known."""
    lines = [f"checkpoint {checkpoint} does not match the model built from model.backbone:"]
    for title, keys in (("missing", report.missing), ("unexpected", report.unexpected)):
        if keys:
            shown = ", ".join(keys[:12]) + (f", ... ({len(keys) - 12} more)" if len(keys) > 12 else "")
            lines.append(f"  {len(keys)} {title} keys: {shown}")
    for key, in_checkpoint, in_model in report.mismatched_shapes:
        hint = ""
        if key.startswith("fc."):
            hint = f" -> the checkpoint has {in_checkpoint[0]} labels: set model.num_labels: {in_checkpoint[0]}"
        elif key.startswith("head."):
            hint = " -> your head (model.head) is built with other sizes: check model.head_args"
        elif "word_embeddings" in key:
            hint = " -> vocabulary size differs: model.backbone is not the backbone this checkpoint was trained from"
        lines.append(f"  shape of {key}: checkpoint {list(in_checkpoint)} vs model {list(in_model)}{hint}")
    return "\n".join(lines)
