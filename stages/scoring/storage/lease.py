"""One run per output: a run holds a lease on `infer.output` from before it touches the parts until it ends.

The lease is `<output>.lease`, beside the output and its parts directory (which a run may delete and
recreate, so it cannot hold the lease), and it names its owner: a run id, host, pid and start time. A
second run that finds a live lease stops with one line naming the output and the owner.

On a local or shared disk the owner holds an exclusive kernel lock (`flock`) on the file for its whole
run. The kernel drops the lock the moment the process dies, SIGKILL included (on NFS the server drops it
when the client's lock lease ends, 90 s by default), so a lease left by a dead run is taken over at
once, with a warning naming the old owner; no clock or expiry is involved. Object stores have no locks:
there the lease is an object with an expiry, renewed while the run lives (`stages.scoring.storage.object_lease`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import socket
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import psutil

from stages.core.errors import UserError
from stages.scoring.storage.locations import Location, storage_error

log = logging.getLogger(__name__)

LEASE_SUFFIX = ".lease"
PID_START_SLACK_S = 1.0  # a pid whose process started at another time was reused by another process


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: the run's id, host, pid and process start time; on object stores, until when."""

    run_id: str
    host: str
    pid: int
    started: float
    expires: float | None = None

    @classmethod
    def this_run(cls) -> Owner:
        return cls(secrets.token_hex(6), socket.gethostname(), os.getpid(), psutil.Process().create_time())

    @classmethod
    def from_json(cls, data: bytes) -> Owner | None:
        """The owner a lease records; None if it records none (empty, or damaged)."""
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def until(self, expires: float) -> Owner:
        return replace(self, expires=expires)

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"run {self.run_id} on host {self.host}, pid {self.pid}, started {started}"

    def gone(self, now: float) -> str | None:
        """Why this owner's lease is stale (expired, or its process on this host is gone), or None if it may live."""
        if self.expires is not None and self.expires < now:
            return f"its lease expired {now - self.expires:.0f} s ago"
        if self.host == socket.gethostname():
            return process_gone(self.pid, self.started)
        return None


def process_gone(pid: int, started: float) -> str | None:
    """Why process `pid` of this host, started at `started`, no longer runs (gone, its pid reused, or a zombie: ended
    and not yet reaped, as where a container's PID 1 reaps nothing); None if it runs."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) >= PID_START_SLACK_S:
            return f"pid {pid} is no longer running"
        if process.status() == psutil.STATUS_ZOMBIE:
            return f"pid {pid} has ended: it is a zombie that no parent has reaped"
    except psutil.NoSuchProcess:
        return f"pid {pid} is no longer running"
    except psutil.AccessDenied:
        return None
    return None


def lease_beside(output: Location) -> Location:
    """Where the lease on `output` lives."""
    return output.sibling(output.base_name + LEASE_SUFFIX)


def busy(output: Location, holder: Owner | None, detail: str = "") -> UserError:
    """The error of a run that finds `output` leased by another run."""
    who = holder.describe() if holder is not None else "its owner is starting and has not recorded itself yet"
    return UserError(
        f"infer.output = {output.name} is being written by another run ({who}{detail}); "
        "wait for that run to end, or stop it, then run again"
    )


def took_over(output: Location, holder: Owner | None, why: str) -> None:
    """Say that this run takes over a lease a run left behind."""
    who = holder.describe() if holder is not None else "a run whose lease is unreadable"
    log.warning("taking over the lease on %s from %s, which ended without releasing it (%s)", output.name, who, why)


class FileLease:
    """A lease on an output on a local or shared disk: an exclusive kernel lock on `<output>.lease`, held all run."""

    def __init__(self, output: Location) -> None:
        self.output = output
        self.location = lease_beside(output)
        self.path = Path(self.location.path)
        self.owner = Owner.this_run()
        self.descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lease, or raise the `UserError` naming the run that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise storage_error(self.location, error, writing=True) from None
        for _ in range(3):  # the holder may release (and remove) the file between our open and our lock
            descriptor = self.locked_descriptor()
            try:
                if os.fstat(descriptor).st_ino == os.stat(self.path).st_ino:
                    self.descriptor = descriptor
                    break
            except FileNotFoundError:
                pass
            os.close(descriptor)
        else:
            raise busy(self.output, None)
        if (previous := os.pread(self.descriptor, 1 << 16, 0)) != b"":
            took_over(self.output, Owner.from_json(previous), "its process is gone, so the lock it held is free")
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, self.owner.to_json(), 0)
        os.fsync(self.descriptor)

    def locked_descriptor(self) -> int:
        """The lease file, opened and locked by this run."""
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise storage_error(self.location, error, writing=True) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Owner.from_json(os.pread(descriptor, 1 << 16, 0))
            os.close(descriptor)
            raise busy(self.output, holder) from None
        except OSError as error:
            os.close(descriptor)
            raise UserError(
                f"cannot lock {self.location.name}: {error.strerror}; the output's filesystem must support file "
                "locks (flock), or put infer.output on one that does"
            ) from None
        return descriptor

    def check(self) -> None:
        """A kernel lock is held until this process ends: nothing can take it over meanwhile."""

    def release(self) -> None:
        """Remove the lease file, then drop the lock (in that order, so that no one locks a file about to go)."""
        if self.descriptor is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.descriptor)
            self.descriptor = None
