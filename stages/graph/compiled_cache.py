"""OpenVINO's compiled models kept between processes, so that `infer` loads what `parity` compiled (base: 0.4 s
instead of 2.7) instead of compiling the same export again.

OpenVINO keys a model compiled from a file by the file's path and the compile options, not by its content (its
`ModelCache::compute_hash`), so an export written again to the same path would load the old compiled model. Here each
export gets its own directory, named by the identity of its files and OpenVINO's version: a small file's content (the
graph, `model.json`), a large one's size, inode and change times (the weights: a new export writes new files, and
reading 1 GB to hash it would cost much of what the cache saves); opening it removes the directories of older exports
of the same path.
Compiles of one export are serialised by a lock file: processes on one machine (Ray actors) compile it once, and the
others wait and load it. OpenVINO writes its file in place; a directory is marked ready once the compile that wrote
it returned, and one found unmarked (a process killed while writing) is emptied before use.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"
READY_FILE = ".ready"  # written once a compile into the directory has returned
HASHED_BYTES = 1 << 24  # files up to this size are identified by their content


def file_identity(path: Path) -> list:
    """A small file's content digest; a large one's size, inode and modification and change times."""
    status = path.stat()
    if status.st_size <= HASHED_BYTES:
        return [hashlib.sha256(path.read_bytes()).hexdigest()]
    return [status.st_size, status.st_ino, status.st_mtime_ns, status.st_ctime_ns]


def export_identity(onnx_dir: Path, version: str) -> str:
    """A digest of the export's files and of the OpenVINO version compiling them."""
    files = [
        [path.relative_to(onnx_dir).as_posix(), *file_identity(path)]
        for path in sorted(onnx_dir.rglob("*"))
        if path.is_file()
    ]
    return hashlib.sha256(json.dumps([version, files]).encode()).hexdigest()[:16]


@contextmanager
def compile_cache(model: Path, root: Path, version: str) -> Iterator[Path]:
    """The directory where OpenVINO keeps `model`'s compiled form, held under the export's lock while in the block."""
    onnx_dir = model.resolve().parent
    home = root / hashlib.sha256(str(onnx_dir).encode()).hexdigest()[:16]  # one per export path
    home.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")
    current = home / export_identity(onnx_dir, version)
    with (home / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for older in home.iterdir():
            if older.is_dir() and older != current:
                shutil.rmtree(older, ignore_errors=True)  # a process still serving it keeps its mapped pages
        if current.exists() and not (current / READY_FILE).exists():
            shutil.rmtree(current)  # a compile that did not return: its file may be cut short
        current.mkdir(exist_ok=True)
        yield current
        (current / READY_FILE).touch()
