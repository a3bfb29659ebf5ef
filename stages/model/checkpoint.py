"""Reading checkpoints safely and matching their keys to the model, whatever wrapped them.

Handles a plain `state_dict` (the seed's `torch.save(model.state_dict())`), a dict holding a
`state_dict` (PyTorch Lightning), `module.` (DataParallel/DDP), `_orig_mod.` (`torch.compile`) and
`model.` (a LightningModule's attribute) prefixes, and `.safetensors` files. Pickles are read with
`weights_only=True`: nothing in a checkpoint can run code.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.core.errors import UserError

WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
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
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat tensor mapping, refusing anything that needs unpickling code."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (set model.checkpoint in params.yaml)")
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


def strip_wrapper_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Peel wrapper prefixes shared by every key; keep the peeling that best matches `expected`."""
    candidates = [state]
    while prefix := next((p for p in WRAPPER_PREFIXES if all(key.startswith(p) for key in candidates[-1])), None):
        candidates.append({key[len(prefix) :]: value for key, value in candidates[-1].items()})
    return max(candidates, key=lambda candidate: len(expected.intersection(candidate)))


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
        elif "word_embeddings" in key:
            hint = " -> vocabulary size differs: model.backbone is not the backbone this checkpoint was trained from"
        lines.append(f"  shape of {key}: checkpoint {list(in_checkpoint)} vs model {list(in_model)}{hint}")
    return "\n".join(lines)
