"""Where datasets and outputs live: a local path or a URL (s3://, gs://, file://, or any fsspec protocol).

URLs go through pyarrow's filesystems where pyarrow has one (S3, GCS, local) and through fsspec
otherwise (hf://, az://, ...). Credentials come the standard way for each filesystem (environment,
config files); nothing here reads them from params.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs

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


def storage_error(location: Location, error: BaseException) -> UserError:
    """A filesystem failure as one line naming the location, with the likely fix."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    lowered = reason.lower()
    if any(word in lowered for word in ("credential", "access denied", "accessdenied", "forbidden", "403")):
        hint = "check the credentials (environment, config files) for this location"
    elif any(word in lowered for word in ("nosuchbucket", "bucket does not exist", "404")):
        hint = "check the bucket name"
    else:
        hint = "check the location and that it is reachable"
    return UserError(f"cannot access {location.name}: {reason}; {hint}")
