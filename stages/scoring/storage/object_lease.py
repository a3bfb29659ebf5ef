"""The lease on an output in an object store: `<output>.lease`, an object naming its owner and an expiry.

A run creates the object only if it is absent, renews it every third of its lifetime from a
heartbeat thread while it runs, and deletes it when it ends (normally or with an error). A lease
whose expiry has passed, or whose owner ran on this host and is gone, is stale: the next run takes
it over, replacing it only if it is still the stale one it read, and warns naming the old owner.

On S3 those three writes are atomic conditional requests through boto3 (pyarrow's S3 filesystem
sends no preconditions): create with `If-None-Match: *`, renew and take over with `If-Match: <ETag>`,
delete with `If-Match`. Where a store offers no conditional write here (GCS, Azure and fsspec stores
through pyarrow; S3 without boto3), `PlainStore` checks, writes and reads back after a second: two
runs that start together are then caught unless a write takes longer than that to land.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Protocol

import pyarrow.fs as pafs

from stages.core.errors import UserError
from stages.scoring.storage.lease import Owner, busy, lease_beside, took_over
from stages.scoring.storage.locations import Location, storage_error

log = logging.getLogger(__name__)

# A crashed run's output is free a minute later; a live run renews every 20 s, so a renewal may fail twice
# (a slow or briefly unreachable store) before its lease could expire.
LEASE_SECONDS = 60.0
SETTLE_SECONDS = 1.0  # PlainStore: how long a write may take to land before the read-back that confirms it
CONFLICT_STATUSES = (404, 409, 412)  # gone, a concurrent conditional write, the precondition failed


class LeaseStore(Protocol):
    """Where a lease object lives, with compare-and-swap writes; a version is the object's ETag or checksum."""

    def read(self) -> tuple[bytes, str] | None: ...
    def create(self, data: bytes) -> str | None: ...
    def replace(self, data: bytes, version: str) -> str | None: ...
    def delete(self, version: str) -> None: ...


class ObjectLease:
    """A lease with an expiry on an output in an object store, renewed by a heartbeat thread while the run lives."""

    def __init__(self, output: Location, store: LeaseStore, seconds: float = LEASE_SECONDS) -> None:
        self.output, self.store, self.seconds = output, store, seconds
        self.owner = Owner.this_run()
        self.version = ""
        self.lost: str | None = None
        self.stopping = threading.Event()
        self.heartbeat = threading.Thread(target=self.renew_until_stopped, name="lease-heartbeat", daemon=True)

    def record(self) -> bytes:
        return self.owner.until(time.time() + self.seconds).to_json()

    def acquire(self) -> None:
        """Take the lease (a stale one over), or raise the `UserError` naming the run that holds it."""
        for _ in range(5):  # another run may create, release or take over the lease between our requests
            if (version := self.store.create(self.record())) is not None:
                break
            if (current := self.store.read()) is None:
                continue
            holder = Owner.from_json(current[0])
            why = holder.gone(time.time()) if holder is not None else "it is unreadable"
            if why is None:
                left = f"; its lease expires {holder.expires - time.time():.0f} s from now" if holder.expires else ""
                raise busy(self.output, holder, left)
            if (version := self.store.replace(self.record(), current[1])) is not None:
                took_over(self.output, holder, why)
                break
        else:
            raise UserError(f"cannot take the lease on {self.output.name}: other runs keep changing it; run again")
        self.version = version
        self.heartbeat.start()

    def renew_until_stopped(self) -> None:
        """Renew the lease every third of its lifetime; note it as lost if another run took it over or it expired."""
        expires = time.time() + self.seconds
        while not self.stopping.wait(self.seconds / 3):
            try:
                version = self.store.replace(self.record(), self.version)
            except UserError as error:
                if time.time() > expires:
                    self.lost = f"it expired while the store could not be reached: {error}"
                    return
                log.warning("cannot renew the lease on %s (%s); trying again", self.output.name, error)
                continue
            if version is None:
                self.lost = "another run took it over after it was not renewed in time"
                return
            self.version, expires = version, time.time() + self.seconds

    def check(self) -> None:
        """Raise if this run no longer holds its lease: another run may be writing the output now."""
        if self.lost is not None:
            raise UserError(
                f"this run lost its lease on {self.output.name} ({self.lost}), so it stops without finishing "
                "the output; run it again once no other run writes there"
            )

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this run's; a failure leaves it to expire."""
        self.stopping.set()
        if self.heartbeat.is_alive():
            self.heartbeat.join()
        if self.lost is not None:
            return
        try:
            self.store.delete(self.version)
        except UserError as error:
            log.warning(
                "cannot release the lease on %s (%s); it expires in %.0f s", self.output.name, error, self.seconds
            )


class PlainStore:
    """A lease object through a pyarrow filesystem, without conditional writes: check, write, read back."""

    def __init__(self, location: Location) -> None:
        self.location = location

    def read(self) -> tuple[bytes, str] | None:
        if not self.location.exists():
            return None
        data = self.location.read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> str | None:
        if self.location.exists():
            return None
        return self.written(data)

    def replace(self, data: bytes, version: str) -> str | None:
        current = self.read()
        if current is None or current[1] != version:
            return None
        return self.written(data)

    def written(self, data: bytes) -> str | None:
        """Write `data`; its version if, a moment later, it is still what the store holds."""
        self.location.write_bytes(data)
        time.sleep(SETTLE_SECONDS)
        current = self.read()
        return current[1] if current is not None and current[0] == data else None

    def delete(self, version: str) -> None:
        current = self.read()
        if current is not None and current[1] == version:
            self.location.delete()


class S3Store:
    """A lease object on S3 with conditional requests (If-None-Match / If-Match) through boto3."""

    def __init__(self, location: Location, client) -> None:
        self.location = location
        self.client = client
        self.bucket, _, self.key = location.path.partition("/")

    def request(self, operation: str, **arguments) -> dict | None:
        """Call the S3 operation; None if its precondition failed or the object is gone."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, Key=self.key, **arguments)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in CONFLICT_STATUSES:
                return None
            raise storage_error(self.location, error, writing=operation != "get_object") from None
        except BotoCoreError as error:
            raise storage_error(self.location, error, writing=operation != "get_object") from None

    def read(self) -> tuple[bytes, str] | None:
        if (response := self.request("get_object")) is None:
            return None
        return response["Body"].read(), response["ETag"]

    def create(self, data: bytes) -> str | None:
        response = self.request("put_object", Body=data, IfNoneMatch="*")
        return None if response is None else response["ETag"]

    def replace(self, data: bytes, version: str) -> str | None:
        response = self.request("put_object", Body=data, IfMatch=version)
        return None if response is None else response["ETag"]

    def delete(self, version: str) -> None:
        self.request("delete_object", IfMatch=version)


def s3_client(filesystem: pafs.S3FileSystem):
    """A boto3 S3 client that reaches what `filesystem` reaches: its endpoint, region and explicit keys, if any."""
    import boto3

    options = filesystem.__reduce__()[1][0]  # the filesystem's constructor arguments, as pickling rebuilds it
    endpoint = options["endpoint_override"] or None
    if endpoint is not None and "://" not in endpoint:
        endpoint = f"{options['scheme']}://{endpoint}"
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=filesystem.region or None,
        aws_access_key_id=options["access_key"],
        aws_secret_access_key=options["secret_key"],
        aws_session_token=options["session_token"],
    )


def object_lease(output: Location, seconds: float = LEASE_SECONDS) -> ObjectLease:
    """The lease on an output in an object store: conditional on S3 (with boto3), checked and read back elsewhere."""
    location = lease_beside(output)
    if isinstance(output.filesystem, pafs.S3FileSystem):
        try:
            return ObjectLease(output, S3Store(location, s3_client(output.filesystem)), seconds)
        except ModuleNotFoundError as error:
            if error.name not in ("boto3", "botocore"):
                raise
            reason = "boto3 is not installed (pip install -e '.[s3]' makes it atomic)"
    else:
        reason = f"{type(output.filesystem).__name__} sends no conditional writes"
    log.warning("the lease on %s is not atomic: %s; see docs/faults.md", output.name, reason)
    return ObjectLease(output, PlainStore(location), seconds)
