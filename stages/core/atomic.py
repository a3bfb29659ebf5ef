"""Writing outputs so that an interrupted run never leaves a file that looks complete."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages.core.errors import UserError


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it into place only if the block succeeds.

    Failing writes (no space, no permission, a file where a directory should be) become a
    `UserError` naming `target`, and leave neither the temporary file nor a partial `target`.
    """
    ensure_directory(target.parent)
    temporary = None
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        temporary = Path(name)
        os.chmod(temporary, 0o666 & ~_umask())
        yield temporary
        os.replace(temporary, target)
    except OSError as error:
        raise _write_error(target, error) from None
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; swap it into place only if the block succeeds."""
    ensure_directory(target.parent)
    temporary = None
    try:
        temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(temporary, 0o777 & ~_umask())
        yield temporary
        previous = target.with_name(f".{target.name}.old")
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            os.replace(target, previous)
        os.replace(temporary, target)
        shutil.rmtree(previous, ignore_errors=True)
    except OSError as error:
        raise _write_error(target, error) from None
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def write_json(target: Path, payload: dict[str, Any] | list[Any]) -> None:
    """Write `payload` as indented JSON, atomically."""
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def ensure_directory(directory: Path) -> None:
    """Create `directory` (and parents), or fail with a `UserError` that says why."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(directory, error) from None


def _write_error(target: Path, error: OSError) -> UserError:
    reason = error.strerror or str(error)
    hint = (
        "free some space"
        if error.errno == errno.ENOSPC
        else "check the path and its permissions, or choose another output path"
    )
    return UserError(f"cannot write {target}: {reason}; {hint}. Nothing partial was left in its place.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
