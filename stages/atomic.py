"""Writing outputs so that an interrupted run never leaves a file that looks complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages.errors import UserError


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it into place only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_writable(target.parent)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_umask())
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; swap it into place only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_writable(target.parent)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(temporary, 0o777 & ~_umask())
    try:
        yield temporary
        previous = target.with_name(f".{target.name}.old")
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            os.replace(target, previous)
        os.replace(temporary, target)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_json(target: Path, payload: dict[str, Any] | list[Any]) -> None:
    """Write `payload` as indented JSON, atomically."""
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_writable(directory: Path) -> None:
    if not os.access(directory, os.W_OK):
        raise UserError(f"output directory {directory} is not writable; fix its permissions or choose another path")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
