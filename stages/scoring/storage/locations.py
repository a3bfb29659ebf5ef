"""Where datasets and outputs live: a local path or a URL (s3://, gs://, file://, or any fsspec protocol).

URLs go through pyarrow's filesystems where pyarrow has one (S3, GCS, local) and through fsspec
otherwise (hf://, az://, ...). Credentials come the standard way for each filesystem (environment,
config files); nothing here reads them from params.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs

from stages.core.atomic import atomic_path
from stages.core.errors import UserError


@dataclass(frozen=True)
class Location:
    """A file or directory on some filesystem, with the name the user gave it (for messages)."""

    filesystem: pafs.FileSystem
    path: str
    name: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    def child(self, name: str) -> Location:
        return Location(self.filesystem, f"{self.path.rstrip('/')}/{name}", f"{self.name.rstrip('/')}/{name}")

    def sibling(self, name: str) -> Location:
        parent = self.path.rstrip("/").rpartition("/")[0]
        parent_name = self.name.rstrip("/").rpartition("/")[0]
        return Location(self.filesystem, f"{parent}/{name}", f"{parent_name}/{name}" if parent_name else name)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def read_bytes(self) -> bytes:
        try:
            with self.filesystem.open_input_stream(self.path) as stream:
                return stream.read()
        except (OSError, pa.ArrowException) as error:
            raise storage_error(self, error) from None

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes | pa.Buffer) -> None:
        """Write `data` so that readers see the old content or the new, never part of it."""
        with atomic_file(self) as temporary, temporary.filesystem.open_output_stream(temporary.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    @property
    def base_name(self) -> str:
        return self.path.rstrip("/").rpartition("/")[2]

    def entries(self) -> list[pafs.FileInfo]:
        """What this directory holds directly (files and directories); nothing if it does not exist."""
        try:
            return self.filesystem.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        except (OSError, pa.ArrowException) as error:
            raise storage_error(self, error) from None

    def files(self, prefix: str = "") -> list[Location]:
        """The files directly inside this directory whose names start with `prefix`, sorted by name."""
        names = sorted(info.base_name for info in self.entries() if info.type == pafs.FileType.File)
        return [self.child(name) for name in names if name.startswith(prefix)]

    def make_directory(self) -> None:
        try:
            self.filesystem.create_dir(self.path, recursive=True)
        except (OSError, pa.ArrowException) as error:
            raise storage_error(self, error, writing=True) from None

    def delete(self) -> None:
        """Remove this file or directory tree if it exists."""
        info = self.info()
        try:
            if info.type == pafs.FileType.Directory:
                self.filesystem.delete_dir(self.path)
            elif info.type == pafs.FileType.File:
                self.filesystem.delete_file(self.path)
        except (OSError, pa.ArrowException) as error:
            raise storage_error(self, error, writing=True) from None

    def move_to(self, target: Location) -> None:
        """Rename (local) or copy-then-delete (object stores: each object appears whole, never in part)."""
        try:
            self.filesystem.move(self.path, target.path)
        except (OSError, pa.ArrowException) as error:
            raise storage_error(target, error, writing=True) from None

    def info(self) -> pafs.FileInfo:
        """What the filesystem reports (type, size, modification time); a `UserError` naming the location if it cannot."""
        try:
            return self.filesystem.get_file_info(self.path)
        except (OSError, pa.ArrowException) as error:
            raise storage_error(self, error) from None


def locate(name: str) -> Location:
    """The location a param names: a local path (relative to the working directory) or a URL."""
    if "://" not in name:
        return Location(pafs.LocalFileSystem(), str(Path(name).resolve()), name)
    try:
        filesystem, path = pafs.FileSystem.from_uri(name)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        filesystem, path = fsspec_filesystem(name)
    except OSError as error:
        raise storage_error(Location(pafs.LocalFileSystem(), name, name), error) from None
    return Location(filesystem, path, name)


@contextmanager
def atomic_file(target: Location) -> Iterator[Location]:
    """A temporary location beside `target`, moved onto it only if the block succeeds.

    Locally that is a rename; an object store has no rename, but its copy makes the whole object
    appear at once, so a reader never sees part of `target` on either.
    """
    if target.is_local:
        with atomic_path(Path(target.path)) as temporary:
            yield Location(target.filesystem, str(temporary), target.name)
        return
    temporary = target.sibling(f".{target.base_name}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        temporary.move_to(target)
    except (OSError, pa.ArrowException) as error:
        raise storage_error(target, error, writing=True) from None
    finally:
        with suppress(OSError, pa.ArrowException):  # moved into place, or never written
            temporary.filesystem.delete_file(temporary.path)


def fsspec_filesystem(name: str) -> tuple[pafs.FileSystem, str]:
    """A URL pyarrow has no filesystem for, through fsspec (which must have the protocol installed)."""
    import fsspec

    try:
        filesystem, path = fsspec.core.url_to_fs(name)
    except (ImportError, ValueError) as error:
        raise UserError(
            f"cannot open {name}: {str(error).splitlines()[0]}; install the fsspec package for its protocol "
            "(e.g. pip install s3fs gcsfs adlfs huggingface_hub)"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path


UNREACHABLE = ("network", "connect", "curlcode", "timed out", "timeout", "unreachable", "resolve host")


def storage_error(location: Location, error: BaseException, writing: bool = False) -> UserError:
    """A filesystem failure as one line naming the location, with the likely fix."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    lowered = reason.lower()
    if re.search(r"credential|access[ _]?denied|\b403\b", lowered):  # not a "403" inside a key's hash
        hint = "check the credentials (environment, config files) for this location"
    elif re.search(r"no_?such_?bucket|bucket does not exist|\b404\b", lowered):
        hint = "check the bucket name"
    elif any(word in lowered for word in UNREACHABLE):
        hint = "check that the store is reachable (network, endpoint), then run again: finished parts are kept"
    elif writing:
        hint = "check the path and its permissions, or choose another output path"
    else:
        hint = "check the location and that it is reachable"
    return UserError(f"cannot {'write' if writing else 'access'} {location.name}: {reason}; {hint}")
