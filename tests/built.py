"""Test artefacts (tokenizers, backbone files, trained tiny models) built once per version of the code that builds
them, and kept in `.pytest_cache/built/` across test sessions, so the fast loop does not retrain them.

An artefact's key hashes its name, the files that build it (`SOURCES`, the test data) and the library
versions, so any edit to them rebuilds it; a fresh clone (CI) builds everything once per session.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".pytest_cache" / "built"
SOURCES = (
    "tests/backbones.py", "tests/layouts.py", "tests/first_subword.py", "tests/built.py", "tests/data/real_text.parquet",
    "stages/model/token_model.py", "stages/model/tokenizer_layout.py", "stages/model/backbone.py", "tools/demo/rules.py",
    "tools/demo/corpus.py", "tools/demo/lexicon.py",
)  # fmt: skip
LIBRARIES = ("torch", "transformers", "tokenizers", "sentencepiece")
COMPLETE = ".complete"
WEIGHTS_FILE = "weights.safetensors"


@functools.cache
def sources_digest(extra: tuple[str, ...] = ()) -> str:
    """The key of an artefact built by `SOURCES` and its own `extra` files, with the library versions."""
    digest = hashlib.sha256()
    for name in (*SOURCES, *extra):
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    for library in LIBRARIES:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()[:16]


def built(name: str, build: Callable[[Path], None], sources: tuple[str, ...] = ()) -> Path:
    """The directory `build` fills for artefact `name`, built now unless this version of it is kept already (its key:
    `SOURCES` and its own `sources`). Parallel test workers wait for one another (a lock per artefact), so each
    artefact is built once."""
    directory = CACHE / f"{name}-{sources_digest(sources)}"
    if (directory / COMPLETE).is_file():
        return directory
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / COMPLETE).is_file():
            staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE))
            try:
                build(staging)
                (staging / COMPLETE).touch()
                shutil.rmtree(directory, ignore_errors=True)  # a half-built one from an interrupted session
                os.replace(staging, directory)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return directory


def built_weights(
    name: str, train: Callable[[Path], dict[str, torch.Tensor]], sources: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """The tensors `train` returns (it may write scratch files in the directory it is given), trained once per version
    of artefact `name` (`built`) and kept as safetensors."""

    def build(directory: Path) -> None:
        weights = train(directory)
        save_file({key: value.contiguous() for key, value in weights.items()}, directory / WEIGHTS_FILE)

    return load_file(built(name, build, sources) / WEIGHTS_FILE)


def copy_files(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """The files of a built directory (but its marker and `skip`) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and file.name != COMPLETE and file.name not in skip:
            shutil.copy2(file, target / file.name)
