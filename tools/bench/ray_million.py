"""Engine `local` against engine `ray` on a two-node loopback cluster, at dataset scale, side by side.

    unshare --net --pid --fork --mount-proc bash -c 'ip link set lo up && python -m tools.bench.ray_million'

Writes `--rows` rows of real text (`tests/data/real_text.parquet` and `infer.input`'s texts, repeated with distinct
ids) as `--files` Parquet files, then scores them with the exported model (`export.output`; run `dvc repro` first,
so its parity verdict is there) through `python -m stages.infer`, each engine its own process: `local`, then `ray`
on a cluster this tool starts on 127.0.0.1 (a head and a second node, each with `--cpus-per-node` CPUs for one
scoring actor of that many CPUs and one more for a tokenising actor: logical CPUs, on the machine's cores). While
each runs, every half second it samples the driver's RSS, every Ray worker's RSS, and whether a part file is
finished, and it reads Ray Data's progress lines for the blocks queued between the steps. Prints, per engine: wall
time, time to the first finished part, rows/s, the driver's peak RSS, each Ray worker's peak RSS, the most queued
at one step, and whether the outputs are the same bytes; with the CPU.
Run it in private namespaces (above) so that no Ray traffic leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from stages.core.cpu import describe_cpu
from stages.core.params import PARAMS_FILE
from stages.core.runner import run_stage
from stages.scoring.storage.parts import PART_PREFIX, PART_SUFFIX
from tools.bench.exports import PROJECT_ROOT, subprocess_env
from tools.cli import option, parse

REAL_TEXT = PROJECT_ROOT / "tests/data/real_text.parquet"
RAY_PORT = 6380
QUEUED = re.compile(r"Queued blocks: \d+ \((?P<size>[\d.]+)(?P<unit>[KMG])iB\)")
IN_MB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}  # Ray Data's size units
MB = 1 << 20


@dataclass(frozen=True)
class RayMillion:
    """The dataset-scale engine benchmark's settings."""

    rows: int = option(1_000_000, "rows to score")
    files: int = option(4, "Parquet files the rows are written as (a directory dataset)")
    cpus_per_node: int = option(1, "CPUs of each of the two Ray nodes' scoring actor (each node has one more)")
    tokenizers: int = option(1, "tokenising actors (infer.ray_tokenizers), of 1 CPU each")
    queue_mb: int = option(0, "object store MB for the blocks between the steps (infer.ray_queue_mb; 0: Ray's)")
    growing: bool = option(False, "also run a pool that starts with one scoring actor and may grow to two")
    tmp_dir: str | None = option(None, "where the dataset and outputs are written (default: the system's)")


@dataclass
class Sampled:
    """What one engine's run was seen to do."""

    first_part_s: float | None = None
    driver_peak_mb: float = 0.0
    workers_peak_mb: dict[str, float] = field(default_factory=dict)  # "ray::<title> <pid>" -> peak RSS
    queued_peak_mb: float = 0.0  # the most Ray Data reported waiting at one step ("Queued blocks: n (size)")


def write_dataset(params: dict, rows: int, files: int, directory: Path) -> Path:
    """`rows` rows of real text with distinct ids as `files` Parquet files under `directory`."""
    texts = [*pq.read_table(REAL_TEXT).column("text").to_pylist()]  # nulls and all, as users' data has them
    texts += pq.read_table(params["infer"]["input"]).column(params["infer"]["text_column"]).to_pylist()
    directory.mkdir(parents=True)
    per_file = -(-rows // files)
    for number in range(files):
        first, last = number * per_file, min(rows, (number + 1) * per_file)
        ids = [f"row-{index}" for index in range(first, last)]
        table = pa.table({"id": ids, "text": [texts[index % len(texts)] for index in range(first, last)]})
        pq.write_table(table, directory / f"{number:03d}.parquet", row_group_size=65_536)
    return directory


def engine_workdir(
    params: dict,
    engine: str,
    dataset: Path,
    work: Path,
    settings: RayMillion,
    actors: tuple[int, int | None] = (2, None),
) -> Path:
    """A directory whose params.yaml scores `dataset` with `engine` into its own output, no score store."""
    chosen = json.loads(json.dumps(params))
    for section, key in (("export", "output"), ("parity", "verdict")):
        chosen[section][key] = str((PROJECT_ROOT / chosen[section][key]).resolve())
    chosen["infer"].update(
        engine=engine, input=str(dataset), output="predictions.parquet", metrics="infer.json",
        details="infer_details.json", reuse=False, ray_actors=actors[0], ray_max_actors=actors[1],
        ray_cpus_per_actor=float(settings.cpus_per_node),
        ray_gpus_per_actor=0.0, ray_tokenizers=settings.tokenizers, ray_cpus_per_tokenizer=1.0,
        ray_queue_mb=settings.queue_mb or None,
    )  # fmt: skip
    directory = work / f"{engine}-{actors[0]}-{actors[1]}"
    directory.mkdir()
    (directory / "params.yaml").write_text(yaml.safe_dump(chosen, allow_unicode=True), encoding="utf-8")
    return directory


def sample(process: subprocess.Popen, parts: Path, started: float, seen: Sampled, stop: threading.Event) -> None:
    """Every half second until `stop`: the driver's RSS, each Ray worker's, and the first finished part."""
    driver = psutil.Process(process.pid)
    while not stop.wait(0.5):
        try:
            seen.driver_peak_mb = max(seen.driver_peak_mb, driver.memory_info().rss / MB)
        except psutil.NoSuchProcess:
            return
        for worker in psutil.process_iter(["name", "cmdline", "memory_info"]):
            title = " ".join(worker.info["cmdline"] or [])
            if title.startswith("ray::") and worker.info["memory_info"] is not None:
                name = f"{title.split()[0].removesuffix('.submit')} pid {worker.pid}"
                seen.workers_peak_mb[name] = max(
                    seen.workers_peak_mb.get(name, 0.0), worker.info["memory_info"].rss / MB
                )
        if (
            seen.first_part_s is None
            and parts.is_dir()
            and any(name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX) for name in os.listdir(parts))
        ):
            seen.first_part_s = time.perf_counter() - started


def run_engine(workdir: Path, env: dict[str, str]) -> tuple[float, Sampled, dict]:
    """`python -m stages.infer` in `workdir`, sampled: its wall seconds, what was seen, and its metrics."""
    seen, stop = Sampled(), threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.infer"], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True
    )
    watcher = threading.Thread(
        target=sample, args=(process, workdir / "predictions.parquet.parts", started, seen, stop)
    )
    watcher.start()
    for line in process.stderr:  # passed on, and Ray Data's progress read for its queues
        sys.stderr.write(line)
        if queued := QUEUED.search(line):
            seen.queued_peak_mb = max(seen.queued_peak_mb, float(queued["size"]) * IN_MB[queued["unit"]])
    code = process.wait()
    seconds = time.perf_counter() - started
    stop.set()
    watcher.join()
    if code:
        raise SystemExit(f"infer exited {code} in {workdir}")
    return seconds, seen, json.loads((workdir / "infer_details.json").read_text(encoding="utf-8"))


def start_cluster(cpus: int, temp_dir: Path, env: dict[str, str]) -> None:
    """A Ray head and a second node on 127.0.0.1, `cpus` CPUs each."""
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0"]
    head = ["ray", "start", "--head", f"--port={RAY_PORT}", *common, "--disable-usage-stats"]
    head += ["--include-dashboard=false", f"--temp-dir={temp_dir}"]
    subprocess.run(head, env=env, check=True, capture_output=True)
    subprocess.run(
        ["ray", "start", f"--address=127.0.0.1:{RAY_PORT}", *common], env=env, check=True, capture_output=True
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def row(engine: str, rows: int, seconds: float, seen: Sampled, metrics: dict) -> str:
    workers = sorted(seen.workers_peak_mb.items(), key=lambda item: -item[1])
    shown = ", ".join(f"{name}: {peak:.0f}" for name, peak in workers[:4]) or "-"
    first = f"{seen.first_part_s:.1f}" if seen.first_part_s is not None else "-"
    return (
        f"| {engine} | {rows:,} | {seconds:.1f} | {first} | {rows / seconds:,.0f} | {seen.driver_peak_mb:.0f} | {shown} "
        f"| {seen.queued_peak_mb:.0f} | {metrics['threads']} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(RayMillion, argv, __doc__)
    params = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="ray-million-", dir=settings.tmp_dir))
    ray_temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**subprocess_env(), **token, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    try:
        dataset = write_dataset(params, settings.rows, settings.files, work / "dataset")
        local = engine_workdir(params, "local", dataset, work, settings)
        clustered = {"ray, 2 nodes": engine_workdir(params, "ray", dataset, work, settings)}
        if settings.growing:
            clustered["ray, 1..2 actors"] = engine_workdir(params, "ray", dataset, work, settings, actors=(1, 2))
        results = [("local", *run_engine(local, env))]
        start_cluster(settings.cpus_per_node + 1, ray_temp, env)
        try:
            for label, workdir in clustered.items():
                results.append((label, *run_engine(workdir, {**env, "RAY_ADDRESS": f"127.0.0.1:{RAY_PORT}"})))
        finally:
            subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True)
        outputs = {sha256(workdir / "predictions.parquet") for workdir in [local, *clustered.values()]}
        print(
            f"\n{settings.rows:,} rows in {settings.files} files, model {params['export']['output']}; "
            f"{describe_cpu()}, {os.cpu_count()} CPUs; Ray: 2 nodes x {settings.cpus_per_node + 1} CPUs, a scoring "
            f"actor of {settings.cpus_per_node} CPU each, {settings.tokenizers} tokenising actors of 1 CPU"
        )
        print(
            "| engine | rows | wall s | first part s | rows/s | driver peak RSS MB | Ray workers' peak RSS MB | "
            "queued peak MB | threads |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for engine, seconds, seen, metrics in results:
            print(row(engine, settings.rows, seconds, seen, metrics))
        local_rate, ray_rate = (settings.rows / seconds for _, seconds, _, _ in results[:2])
        print(f"ray / local rows/s: {ray_rate / local_rate:.2f}; outputs identical: {len(outputs) == 1}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_temp, ignore_errors=True)


if __name__ == "__main__":
    run_stage(main)
