"""Throughput of stage `infer`'s engines side by side: local, and Ray Data with 1 and 2 actors.

Scores `infer.input` with the exported model (run `dvc repro` first) under each engine, in one
process, into a temporary directory (the pipeline's outputs are not touched), checks that every
engine wrote the local engine's predictions, and prints a Markdown table. Ray starts on this machine
(RAY_ADDRESS is ignored). Where traffic must stay on loopback, run it in private namespaces:

    unshare --net --pid --fork --mount-proc bash -c 'ip link set lo up && python -m tools.bench.ray_scaling'
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
import pyarrow.parquet as pq
import ray

from stages.core.params import Params, load_params
from stages.core.runner import run_stage
from stages.scoring.cluster.engine import score_with_ray
from stages.scoring.local_engine import score_locally
from tools.cli import option, parse

log = logging.getLogger(__name__)

# (engine, actors, CPUs per actor): the scoring actors may hold every core; the tokenising actor has one more
# logical CPU (`main`), on the same cores.
CONFIGS = (("local", 0, 0.0), ("ray", 1, 1.0), ("ray", 2, 1.0))


def engine_params(params: Params, engine: str, actors: int, cpus: float, output_dir: Path) -> Params:
    """The pipeline's params with one engine chosen and the outputs moved to `output_dir`."""
    name = f"{engine}-{actors}x{cpus:g}"
    infer = dataclasses.replace(
        params.infer,
        engine=engine,
        ray_actors=max(actors, 1),
        ray_cpus_per_actor=cpus or 1.0,
        ray_gpus_per_actor=0.0,
        output=str(output_dir / f"{name}.parquet"),
        metrics=str(output_dir / f"{name}.json"),
    )
    return dataclasses.replace(params, infer=infer)


def measure_engines(params: Params, repeats: int, output_dir: Path) -> list[dict]:
    """Score the dataset `repeats` times per engine, engines taking turns (so that load from elsewhere
    hits them alike); one row per engine with its median run."""
    chosen = [engine_params(params, engine, actors, cpus, output_dir) for engine, actors, cpus in CONFIGS]
    runs: list[list[dict]] = [[] for _ in CONFIGS]
    for _ in range(repeats):
        for engine_runs, engine in zip(runs, chosen, strict=True):
            engine_runs.append(score_locally(engine) if engine.infer.engine == "local" else score_with_ray(engine))
    reference = pq.read_table(chosen[0].infer.output)
    rows = []
    for (_, actors, cpus), engine, engine_runs in zip(CONFIGS, chosen, runs, strict=True):
        median = statistics.median(run["seconds"] for run in engine_runs)
        rows.append(
            {
                "engine": engine.infer.engine,
                "actors": actors or "-",
                "cpus_per_actor": f"{cpus:g}" if actors else "-",
                "threads": engine_runs[0]["threads"],
                "rows": engine_runs[0]["rows"],
                "seconds": round(median, 2),
                "texts_per_s": round(engine_runs[0]["rows"] / median, 1),
                "same_output": pq.read_table(engine.infer.output).equals(reference),
            }
        )
    local = rows[0]["texts_per_s"]
    for row in rows:
        row["vs_local"] = f"{row['texts_per_s'] / local:.2f}x"
    return rows


def markdown_table(rows: list[dict]) -> str:
    header = [
        "engine",
        "actors",
        "cpus_per_actor",
        "threads",
        "rows",
        "seconds",
        "texts_per_s",
        "vs_local",
        "same_output",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class RayScaling:
    """The engine benchmark's settings."""

    repeats: int = option(2, "runs per engine; the median is reported")


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse(RayScaling, argv, __doc__)
    params = load_params()
    os.environ.pop("RAY_ADDRESS", None)
    cpus = (os.cpu_count() or 1) + params.infer.ray_tokenizers * math.ceil(params.infer.ray_cpus_per_tokenizer)
    ray.init(address="local", num_cpus=cpus)  # a fresh cluster, once: each run starts its own actors
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as output_dir:
            rows = measure_engines(params, arguments.repeats, Path(output_dir))
    finally:
        ray.shutdown()
    print(
        f"\n{params.infer.input}, model {params.export.output}: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"onnxruntime {ort.__version__}, ray {ray.__version__}, median of {arguments.repeats} runs; seconds include "
        "starting the Ray actors (model load), not starting Ray; 1-minute load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    run_stage(main)
