"""Engine `ray` of stage `infer`: the local engine's blocks, scored on a Ray Data actor pool, resumably.

The driver reads the dataset once, as the local engine does (same reader, same blocks of
`infer.block_rows` rows, same bad-row checks), into `<output>.parts/input.parquet`: one row group per
block. Ray Data then hands the numbers of the unfinished blocks to an actor pool spread over the
cluster's nodes; each actor holds one onnxruntime session, reads its block's row group, scores it with
`stages.scoring.score.score_rows` and writes the block's part file, exactly as the local engine would.
The driver only collects tallies, then finishes the output like the local engine. So a driver killed
at any moment resumes from the finished parts, and both engines write identical outputs. The driver holds
the output's lease for the whole run (`stages.scoring.lease`), so no second run can score into it.

The driver joins the cluster at `RAY_ADDRESS` when it is set, and otherwise the one last started on
this machine (`ray start`) or a new one of its own. Every node must reach `export.output` at the
driver's absolute path and `infer.output` at its URL (or the same absolute path on a shared disk).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from stages.core.errors import UserError
from stages.core.memory import peak_rss_mb
from stages.core.params import InferParams, Params, RuntimeParams
from stages.graph.session import CUDA, provider_of
from stages.scoring.dataset import Block, empty_dataset, iter_blocks
from stages.scoring.lease import FileLease
from stages.scoring.metrics import Recovery, Tally, build_metrics
from stages.scoring.object_lease import ObjectLease
from stages.scoring.output import (
    count_duplicate_ids,
    finish_output,
    hold_output,
    output_location,
    release_freed_memory,
)
from stages.scoring.parts import PartFiles, fingerprint, parts_beside
from stages.scoring.score import score_rows
from stages.scoring.served import ServedModel, load_framing
from stages.scoring.storage import Location, atomic_file, storage_error
from stages.scoring.windows import check_stride

log = logging.getLogger(__name__)

STAGED_INPUT = "input.parquet"
Lease = FileLease | ObjectLease


def stage_blocks(infer: InferParams, parts: PartFiles) -> int:
    """The dataset's blocks as one Parquet row group each, beside the parts (kept for a rerun); their count."""
    staged = parts.directory.child(STAGED_INPUT)
    if staged.exists():
        return staged_reader(staged).num_row_groups
    blocks = 0
    with atomic_file(staged) as temporary:
        writer = None
        try:
            for block in iter_blocks(infer.input, infer.text_column, infer.id_column, infer.block_rows):
                table = pa.table({"id": block.ids, "text": block.texts, "issue": pa.array(block.issues, pa.string())})
                if writer is None:
                    writer = pq.ParquetWriter(temporary.path, table.schema, filesystem=temporary.filesystem)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
                blocks += 1
        finally:
            if writer is not None:
                writer.close()
        if not blocks:
            raise empty_dataset(infer.input)
    return blocks


def staged_reader(staged: Location) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(staged.filesystem.open_input_file(staged.path))
    except (OSError, pa.ArrowException) as error:
        raise storage_error(staged, error) from None


class BlockScorer:
    """A Ray Data actor: one onnxruntime session; scores staged blocks into part files."""

    def __init__(self, onnx_dir: str, runtime: RuntimeParams, infer: InferParams, parts: Location) -> None:
        release_freed_memory()
        self.served = ServedModel.load(Path(onnx_dir), runtime)
        self.infer = infer
        self.parts = PartFiles(parts)
        self.staged = staged_reader(parts.child(STAGED_INPUT))
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def __call__(self, batch: pa.Table) -> pa.Table:
        reports = []
        for index in batch.column("block").to_pylist():
            rows = self.staged.read_row_group(index)
            issues = rows.column("issue").to_pylist()
            block = Block(rows.column("id").combine_chunks(), rows.column("text").to_pylist(), issues)
            table, tally = score_rows(self.served, block, self.infer)
            self.parts.save(index, table, tally)
            report = {"tally": dataclasses.asdict(tally), "node": self.node, "peak_rss_mb": peak_rss_mb()}
            reports.append(json.dumps({**report, "provider": provider_of(self.served.session)}))
        return pa.table({"report": pa.array(reports, pa.string())})


def actor_runtime(params: Params) -> RuntimeParams:
    """Each actor's onnxruntime settings: one intra-op thread per whole CPU it holds, CUDA only if it holds a GPU."""
    providers = params.runtime.providers
    if params.infer.ray_gpus_per_actor == 0:
        providers = tuple(provider for provider in providers if provider != CUDA)
        if not providers:
            raise UserError(
                "runtime.providers lists only CUDAExecutionProvider but infer.ray_gpus_per_actor is 0; "
                "give the actors GPUs or add CPUExecutionProvider"
            )
    threads = max(1, math.floor(params.infer.ray_cpus_per_actor))
    return dataclasses.replace(params.runtime, providers=providers, intra_op_num_threads=threads)


def score_blocks(params: Params, parts: PartFiles, blocks: list[int], lease: Lease) -> list[dict]:
    """Score `blocks` on an actor pool spread over the cluster; each block's report, as the actors finish them."""
    infer = params.infer
    pending = ray.data.from_items([{"block": index} for index in blocks], override_num_blocks=len(blocks))
    scored = pending.map_batches(
        BlockScorer,
        fn_constructor_kwargs={
            "onnx_dir": str(Path(params.export.output).resolve()),
            "runtime": actor_runtime(params),
            "infer": infer,
            "parts": parts.directory,
        },
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=infer.ray_actors),
        num_cpus=infer.ray_cpus_per_actor,
        num_gpus=infer.ray_gpus_per_actor,
    )  # Ray Data places actors with its default SPREAD strategy: on as many nodes as the pool allows
    reports = []
    for row in scored.iter_rows():
        reports.append(json.loads(row["report"]))
        lease.check()
    return reports


def connect() -> bool:
    """Join the Ray cluster at `RAY_ADDRESS`; without it, `ray.init()`'s default: the cluster last started on
    this machine, or a new one here. True if this call connected (and so disconnects at the end)."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    log.info("joining the Ray cluster at %s", address or "(RAY_ADDRESS not set: local)")
    ray.init(address=address or None)
    return True


def user_error_in(error: BaseException) -> UserError | None:
    """The `UserError` a Ray task raised, unwrapped from Ray's exception wrappers, if that is what failed."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError) and not isinstance(current, ray.exceptions.RayError):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return None


def score_on_cluster(params: Params, parts: PartFiles, blocks: list[int], lease: Lease) -> list[dict]:
    """`score_blocks` on the cluster, a task's `UserError` re-raised as itself."""
    started_ray = connect()
    try:
        return score_blocks(params, parts, blocks, lease)
    except Exception as error:
        cause = user_error_in(error)
        if cause is None or cause is error:
            raise
        raise cause from None
    finally:
        if started_ray:
            ray.shutdown()


def score_with_ray(params: Params) -> dict:
    """Engine `ray`: score `infer.input` into `infer.output` on a Ray Data actor pool; returns the metrics."""
    output = output_location(params.infer.output)
    with hold_output(output) as lease:
        check_stride(params.infer.long_text, params.infer.stride, load_framing(Path(params.export.output)))
        started = time.perf_counter()
        tally, reports, recovery = score_and_finish(params, output, lease)
        seconds = time.perf_counter() - started
        duplicate_ids = count_duplicate_ids(output)
    rows_per_node = Counter()
    for report in reports:
        rows_per_node[report["node"]] += report["tally"]["rows"]
    return build_metrics(
        tally,
        seconds,
        engine="ray",
        provider=",".join(sorted({report["provider"] for report in reports})),
        threads=params.infer.ray_actors * actor_runtime(params).intra_op_num_threads,
        peak_rss_mb=max([peak_rss_mb(), *(report["peak_rss_mb"] for report in reports)]),
        duplicate_ids=duplicate_ids,
        rows_per_node=dict(rows_per_node),
        recovery=recovery,
    )


def score_and_finish(params: Params, output: Location, lease: Lease) -> tuple[Tally, list[dict], Recovery]:
    """Stage the blocks, score the unfinished ones on the cluster, finish the output: the tally, the actors'
    reports, and what the run recovered from."""
    infer = params.infer
    parts = PartFiles.for_run(parts_beside(output), fingerprint(params))
    blocks = stage_blocks(infer, parts)
    resumed = {index: done for index in range(blocks) if (done := parts.finished(index)) is not None}
    todo = [index for index in range(blocks) if index not in resumed]
    log.info("%d blocks: %d finished by an earlier run, %d to score", blocks, len(resumed), len(todo))
    reports = score_on_cluster(params, parts, todo, lease) if todo else []
    tally = Tally()
    for report in reports:
        tally.add(Tally(**report["tally"]))
    for done in resumed.values():
        done.resumed_blocks, done.resumed_rows, done.resumed_tokens = 1, done.rows, done.tokens
        tally.add(done)
    lease.check()
    finish_output(PartFiles(parts.directory), output, infer.input)  # with the parts the actors wrote
    return tally, reports, Recovery(rescored_blocks=len(parts.rescored))
