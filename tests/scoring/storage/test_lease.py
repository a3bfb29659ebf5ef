"""One run per output: the lease on a local output (a kernel lock) and on object stores (an expiring object)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from stages.core.errors import UserError
from stages.scoring.storage import object_lease
from stages.scoring.storage.lease import FileLease, Owner, lease_beside
from stages.scoring.storage.locations import Location, locate
from stages.scoring.storage.object_lease import ObjectLease, PlainStore
from tests.conftest import REPO

HOLD_A_LEASE = (
    "import sys, time\n"
    "from stages.scoring.storage.lease import FileLease\n"
    "from stages.scoring.storage.locations import locate\n"
    "lease = FileLease(locate(sys.argv[1]))\n"
    "lease.acquire()\n"
    "print(lease.owner.run_id, flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def output(tmp_path: Path) -> Location:
    return locate(str(tmp_path / "out" / "predictions.parquet"))


@pytest.fixture
def no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """PlainStore's read-back waits for nothing: these tests have no concurrent writer to wait for."""
    monkeypatch.setattr(object_lease, "SETTLE_SECONDS", 0.0)


def test_a_held_lease_stops_a_second_run_with_one_line_naming_the_output_and_its_owner(output):
    first = FileLease(output)
    first.acquire()
    owner = rf"run {first.owner.run_id} on host {socket.gethostname()}, pid {os.getpid()}, started 20\d\d-"
    with pytest.raises(
        UserError, match=rf"^infer\.output = .*/out/predictions\.parquet is being written by another run \({owner}"
    ) as raised:
        FileLease(output).acquire()
    assert "\n" not in str(raised.value) and str(raised.value).endswith(
        "wait for that run to end, or stop it, then run again"
    )
    first.release()
    assert not Path(lease_beside(output).path).exists(), "a released lease leaves nothing behind"
    second = FileLease(output)
    second.acquire()
    second.release()


@pytest.mark.slow  # SIGKILLs the process that holds the lease
def test_the_lease_of_a_killed_run_is_taken_over_at_once_naming_the_old_owner(output, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_LEASE, output.path],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = holder.stdout.readline().strip()
        with pytest.raises(UserError, match=rf"another run \(run {run_id} on host .*, pid {holder.pid}, "):
            FileLease(output).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lease = FileLease(output)
    with caplog.at_level(logging.WARNING):
        lease.acquire()
    assert f"taking over the lease on {output.name} from run {run_id} on host" in caplog.text
    assert f"pid {holder.pid}, started" in caplog.text and "which ended without releasing it" in caplog.text
    assert json.loads(Path(lease_beside(output).path).read_text())["run_id"] == lease.owner.run_id
    lease.release()


def record(owner: Owner, location: Location) -> None:
    location.write_bytes(owner.to_json())


def test_an_object_lease_that_expired_or_whose_process_is_gone_is_taken_over_and_a_live_one_is_not(
    output, no_settling, caplog
):
    location = lease_beside(output)
    elsewhere = Owner("feedbeef0001", "another-host", 4242, time.time() - 100)
    record(elsewhere.until(time.time() + 30), location)
    with pytest.raises(
        UserError, match=r"run feedbeef0001 on host another-host, pid 4242, .*expires (29|30) s from now"
    ):
        ObjectLease(output, PlainStore(location)).acquire()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = Owner("feedbeef0002", socket.gethostname(), int(dead.stdout), time.time())
    record(here.until(time.time() + 30), location)
    record(elsewhere.until(time.time() - 5), lease_beside(locate(output.path + "-2")))
    for stale, why in [
        (output, f"pid {int(dead.stdout)} is no longer running"),
        (locate(output.path + "-2"), "expired 5 s ago"),
    ]:
        lease = ObjectLease(stale, PlainStore(lease_beside(stale)))
        with caplog.at_level(logging.WARNING):
            lease.acquire()
        assert "which ended without releasing it" in caplog.text and why in caplog.text
        assert Owner.from_json(lease_beside(stale).read_bytes()).run_id == lease.owner.run_id
        lease.release()
        assert not lease_beside(stale).exists()


def test_an_object_lease_whose_process_is_a_zombie_is_taken_over_at_once(output, no_settling, caplog):
    """A run SIGKILLed where nothing reaps it (its parent killed too, a container's PID 1 that reaps nothing) keeps
    its pid and start time as a zombie; it runs no more, so its lease is stale long before it expires."""
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        process = psutil.Process(killed.pid)
        owner = Owner("feedbeef0003", socket.gethostname(), killed.pid, process.create_time())
        record(owner.until(time.time() + 60), lease_beside(output))
        killed.send_signal(signal.SIGKILL)  # and not reaped: this test's process is its parent and does not wait yet
        deadline = time.monotonic() + 10
        while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.status() == psutil.STATUS_ZOMBIE
        lease = ObjectLease(output, PlainStore(lease_beside(output)))
        with caplog.at_level(logging.WARNING):
            lease.acquire()
        lease.release()
    finally:
        killed.wait()
    assert caplog.messages == [
        f"taking over the lease on {output.name} from {owner.describe()}, which ended without releasing it "
        f"(pid {killed.pid} has ended: it is a zombie that no parent has reaped)"
    ]


def test_a_live_object_lease_is_renewed_and_one_taken_over_stops_its_run(output, no_settling):
    location = lease_beside(output)
    lease = ObjectLease(output, PlainStore(location), seconds=0.6)
    lease.acquire()
    time.sleep(1.0)  # past the first expiry: only renewals keep it
    assert Owner.from_json(location.read_bytes()).expires > time.time()
    with pytest.raises(UserError, match=rf"another run \(run {lease.owner.run_id} "):
        ObjectLease(output, PlainStore(location), seconds=0.6).acquire()
    usurper = Owner("feedbeef0003", "another-host", 1, time.time()).until(time.time() + 60)
    record(usurper, location)  # as a run that took the lease over while this one stalled would
    time.sleep(0.5)
    with pytest.raises(UserError, match=r"this run lost its lease on .*another run took it over"):
        lease.check()
    lease.release()
    assert Owner.from_json(location.read_bytes()) == usurper, "a lost lease is not this run's to delete"
