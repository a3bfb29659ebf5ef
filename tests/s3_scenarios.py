"""Scoring from and to a real S3-compatible server (moto in server mode) on 127.0.0.1.

Not collected on its own: `tests/test_object_store.py` runs this module with pytest inside a private
network namespace, where the server, the stages and the checks all see only loopback. The stages reach
the server the standard way (`AWS_ENDPOINT_URL` and the AWS credential variables); the server enforces
credentials (an IAM user with a key), so a missing credential fails as it would on AWS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from stages import export, load_checkpoint
from stages.scoring.storage.lease import Owner
from stages.scoring.storage.locations import locate
from stages.scoring.storage.object_lease import ObjectLease, S3Store, object_lease
from tests.conftest import REPO, Workspace

ENDPOINT = "http://127.0.0.1:5123"
BUCKET = "scoring"
INPUT = f"s3://{BUCKET}/in/data.parquet"
ROWS = 124  # 120 texts and the workspace's 4 bad rows


@pytest.fixture(scope="module")
def server() -> ThreadedMotoServer:
    """A moto server that checks credentials (after the first three requests, which set up a user and its key)."""
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"  # creating the user, its key and its policy; then keys count
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=5123)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def credentials(server, tmp_path_factory) -> dict[str, str]:
    """One IAM user's key for the server, and the bucket; as environment variables."""
    standard = {
        "AWS_ENDPOINT_URL": ENDPOINT,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": str(tmp_path_factory.mktemp("home")),  # no ~/.aws of the machine's user
    }
    os.environ.update(standard)
    iam = boto3.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="scorer")
    key = iam.create_access_key(UserName="scorer")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="scorer", PolicyName="everything", PolicyDocument=json.dumps(policy))
    keys = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    os.environ.update(keys)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return {**standard, **keys}


@pytest.fixture
def exported(make_workspace, credentials) -> Workspace:
    """A workspace whose model is exported and whose dataset is uploaded to `INPUT`."""
    workspace = make_workspace("deberta-v2", rows=120)
    workspace.write_params(infer={"input": INPUT, "block_rows": 8})
    load_checkpoint.main()
    export.main()
    boto3.client("s3").upload_file(str(workspace.root / "data.parquet"), BUCKET, "in/data.parquet")
    return workspace


def infer(workspace: Workspace, *prefix: str, env: dict | None = None, **overrides) -> subprocess.CompletedProcess:
    """Run stage `infer` (behind `prefix`, if any) in a fresh process with `infer` params `overrides`."""
    workspace.write_params(infer=overrides)
    environment = {**(env if env is not None else os.environ), "PYTHONPATH": str(REPO)}
    command = [*prefix, sys.executable, "-m", "stages.infer"]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=900)


def s3() -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=ENDPOINT, scheme="http")


def read_bytes(url: str) -> bytes:
    with s3().open_input_stream(url.removeprefix("s3://")) as stream:
        return stream.read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exists(url: str) -> bool:
    return s3().get_file_info(url.removeprefix("s3://")).type != pafs.FileType.NotFound


def test_both_engines_score_s3_to_s3_and_the_local_engine_resumes_after_sigkill(exported):
    local = infer(exported, input=str(exported.root / "data.parquet"), output="out/local.parquet")
    assert local.returncode == 0, local.stderr[-3000:]
    reference = Path("out/local.parquet").read_bytes()

    output = f"s3://{BUCKET}/out/predictions.parquet"
    interrupt = (sys.executable, "-m", "tests.interrupt", f"{output}.parts", "3", "--")
    killed = infer(exported, *interrupt, input=INPUT, output=output)
    assert killed.returncode == 0, killed.stdout + killed.stderr[-3000:]
    assert not exists(output), "a killed run must not leave an output that looks complete"
    resumed = infer(exported, input=INPUT, output=output)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"taking over the lease on {output} from run " in resumed.stderr, "the killed run's lease is taken over"
    assert read_bytes(output) == reference
    print(
        f"local engine s3->s3 after SIGKILL and rerun: sha256 {sha256(read_bytes(output))}, local file {sha256(reference)}"
    )
    metrics = json.loads(Path(exported.params["infer"]["details"]).read_text())
    assert 3 <= metrics["resumed_blocks"] < metrics["blocks"] and metrics["blocks"] >= 10 and metrics["rows"] == ROWS
    assert not exists(f"{output}.parts"), "the parts are removed once the output is complete"

    on_ray = f"s3://{BUCKET}/out/ray.parquet"
    ray = infer(exported, input=INPUT, output=on_ray, engine="ray", ray_actors=1, ray_cpus_per_actor=1)
    assert ray.returncode == 0, ray.stderr[-3000:]
    assert read_bytes(on_ray) == reference
    metrics = json.loads(Path(exported.params["infer"]["details"]).read_text())
    store = f"s3://{BUCKET}/out/.score-store"  # beside both outputs: the local engine's runs filled it
    assert (metrics["store"]["location"], metrics["reused_rows"], metrics["scored_rows"]) == (store, ROWS, 0), metrics
    print(f"ray engine s3->s3: sha256 {sha256(read_bytes(on_ray))}, all {ROWS} rows from the store on S3")


def test_a_directory_dataset_on_s3_is_read_by_the_ray_workers_into_the_local_engines_bytes(exported):
    """Three files under one prefix: each read and cut into blocks by a Ray task from S3, as the local engine reads
    and cuts the same files from disk."""
    whole = pq.read_table(exported.root / "data.parquet")
    Path("files").mkdir()
    for number, start in enumerate((0, 50, 100)):
        pq.write_table(whole.slice(start, 50 if number < 2 else None), f"files/{number}.parquet")
        boto3.client("s3").upload_file(f"files/{number}.parquet", BUCKET, f"in/files/{number}.parquet")
    local = infer(exported, input="files", output="out/local-files.parquet", reuse=False)
    assert local.returncode == 0, local.stderr[-3000:]
    on_ray = f"s3://{BUCKET}/out/ray-files.parquet"
    ray = infer(
        exported, input=f"s3://{BUCKET}/in/files", output=on_ray, reuse=False, engine="ray", ray_actors=1,
        ray_cpus_per_actor=1,
    )  # fmt: skip
    assert ray.returncode == 0, ray.stderr[-3000:]
    assert read_bytes(on_ray) == Path("out/local-files.parquet").read_bytes()
    metrics = json.loads(Path(exported.params["infer"]["details"]).read_text())
    assert metrics["rows"] == ROWS and metrics["scored_rows"] == ROWS, metrics
    print(f"ray engine, a directory of 3 files on s3: {metrics['blocks']} blocks, the local engine's bytes")


def test_a_directory_output_on_s3_is_a_parquet_dataset_committed_by_success(exported):
    assert infer(exported, output="out/local.parquet").returncode == 0
    reference = pq.read_table("out/local.parquet")
    output = f"s3://{BUCKET}/out/dataset"
    for _ in range(2):  # the second run replaces the first run's dataset
        result = infer(exported, output=output)
        assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(info.base_name for info in s3().get_file_info(pafs.FileSelector(output.removeprefix("s3://"))))
    blocks = json.loads(Path(exported.params["infer"]["details"]).read_text())["blocks"]
    parts = [f"part-{index:06d}.parquet" for index in range(blocks)]
    assert names == sorted([*parts, "_SUCCESS", "_manifest.json"])
    manifest = json.loads(read_bytes(f"{output}/_manifest.json"))
    assert manifest["rows"] == ROWS and [file["name"] for file in manifest["files"]] == parts
    dataset = ds.dataset(output.removeprefix("s3://"), filesystem=s3(), format="parquet")  # skips _ names
    assert dataset.to_table().sort_by("id").equals(reference.sort_by("id"))


def test_a_missing_bucket_or_credential_exits_2_with_one_line_naming_the_url(exported):
    cases = {
        "s3://no-such-bucket/data.parquet": {"input": "s3://no-such-bucket/data.parquet"},
        "s3://no-such-bucket/out.parquet": {"input": INPUT, "output": "s3://no-such-bucket/out.parquet"},
    }
    for url, overrides in cases.items():
        result = infer(exported, **overrides)
        assert result.returncode == 2, result.stderr[-3000:]
        assert url in result.stderr.strip().splitlines()[-1], result.stderr[-3000:]
    anonymous = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_ACCESS", "AWS_SECRET"))}
    result = infer(exported, env=anonymous, input=INPUT, output="out/predictions.parquet")
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert INPUT in last and "credentials" in last, last
    assert not Path("out/predictions.parquet").exists()


def test_one_run_per_s3_output_through_a_conditional_lease_that_a_stale_owner_loses(
    make_workspace, credentials, caplog
):
    workspace = make_workspace("deberta-v2", rows=8)  # params only: a second run stops before it loads the model
    output = f"s3://{BUCKET}/out/leased.parquet"
    lease = object_lease(locate(output))
    assert isinstance(lease.store, S3Store), "on S3 the lease uses conditional requests"
    lease.acquire()
    try:
        assert lease.store.create(b"{}") is None, "If-None-Match: * refuses a second lease"
        assert lease.store.replace(b"{}", '"another-etag"') is None, "If-Match refuses to replace another version"
        second = infer(workspace, input=INPUT, output=output)
        last = second.stderr.strip().splitlines()[-1]
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"infer.output = {output} is being written by another run (run {lease.owner.run_id} on host" in last
        assert "s from now" in last, last
        print(last)
    finally:
        lease.release()
    assert not exists(f"{output}.lease"), "a released lease is deleted"

    crashed = Owner("feedbeef0004", "another-host", 4242, time.time() - 300).until(time.time() - 1)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="out/leased.parquet.lease", Body=crashed.to_json())
    successor = ObjectLease(locate(output), lease.store)
    with caplog.at_level(logging.WARNING):
        successor.acquire()
    successor.release()
    assert f"taking over the lease on {output} from run feedbeef0004 on host another-host, pid 4242" in caplog.text


def test_a_store_that_goes_away_mid_run_is_exit_2_saying_so_and_the_rerun_resumes(exported, server):
    assert infer(exported, input=str(exported.root / "data.parquet"), output="out/local.parquet").returncode == 0
    output = f"s3://{BUCKET}/out/unreachable.parquet"
    exported.write_params(infer={"input": INPUT, "output": output})
    command = [sys.executable, "-m", "stages.infer"]
    run = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    parts = locate(f"{output}.parts")
    deadline = time.monotonic() + 300
    while len(parts.files("part-")) < 6 and run.poll() is None and time.monotonic() < deadline:  # 3 parts, 3 tallies
        time.sleep(0.02)
    server.stop()
    try:
        _, stderr = run.communicate(timeout=600)
    finally:
        server.start()
    last = stderr.strip().splitlines()[-1]
    assert run.returncode == 2, stderr[-3000:]
    assert f"s3://{BUCKET}/" in last and "check that the store is reachable" in last, last
    print(f"store gone mid-run: {last}")
    rerun = infer(exported, input=INPUT, output=output)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"taking over the lease on {output}" in rerun.stderr, "the lost run could not delete its lease"
    assert read_bytes(output) == Path("out/local.parquet").read_bytes()
    assert json.loads(Path(exported.params["infer"]["details"]).read_text())["resumed_blocks"] >= 3


def test_a_run_killed_into_a_zombie_leaves_its_lease_to_a_rerun_at_once_which_resumes_from_its_parts(exported):
    """SIGKILLed where nothing reaps it (as under `timeout -s KILL` in a container whose PID 1 reaps nothing), a run
    stays a zombie with its pid and start time: it runs no more, so the rerun takes its lease over before it expires."""
    assert infer(exported, input=str(exported.root / "data.parquet"), output="out/local.parquet").returncode == 0
    output = f"s3://{BUCKET}/out/zombie.parquet"
    exported.write_params(infer={"input": INPUT, "output": output})
    command = [sys.executable, "-m", "stages.infer"]
    run = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.DEVNULL)
    try:
        parts = locate(f"{output}.parts")
        deadline = time.monotonic() + 300
        while (
            len(parts.files("part-")) < 6 and run.poll() is None and time.monotonic() < deadline
        ):  # 3 parts, 3 tallies
            time.sleep(0.02)
        assert run.returncode is None, "the run must be killed mid-way"
        run.send_signal(signal.SIGKILL)  # not reaped: this process is its parent and does not wait for it yet
        killed = psutil.Process(run.pid)
        while killed.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
        lease = Owner.from_json(read_bytes(f"{output}.lease"))
        assert lease is not None and lease.pid == run.pid and lease.expires > time.time() + 10, lease
        rerun = infer(exported, input=INPUT, output=output)
        assert killed.status() == psutil.STATUS_ZOMBIE, "still a zombie while the rerun ran"
    finally:
        run.wait()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (
        f"taking over the lease on {output} from run {lease.run_id} on host {lease.host}, pid {run.pid}, started "
        in rerun.stderr
    ), rerun.stderr[-3000:]
    assert f"(pid {run.pid} has ended: it is a zombie that no parent has reaped)" in rerun.stderr
    assert read_bytes(output) == Path("out/local.parquet").read_bytes()
    assert json.loads(Path(exported.params["infer"]["details"]).read_text())["resumed_blocks"] >= 3
    print(f"zombie owner: lease taken over at once, {rerun.stderr.count('taking over')} takeover line, resumed")
