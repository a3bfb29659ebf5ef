"""Engine `ray` of stage `infer`: the local engine's blocks, scored on a Ray Data actor pool, resumably.

The driver reads the dataset once, as the local engine does (same reader, same blocks of
`infer.block_rows` rows, same bad-row checks), into `<output>.parts/blocks.parquet` (the blocks file): one row group per
block. Ray Data then hands the numbers of the unfinished blocks to an actor pool spread over the
cluster's nodes; each actor holds one onnxruntime session, reads its block's row group, scores it with
`stages.scoring.score.score_rows` and writes the block's part file, exactly as the local engine would.
The driver only collects tallies, then finishes the output like the local engine. So a driver killed
at any moment resumes from the finished parts, and both engines write identical outputs. The driver holds
the output's lease for the whole run (`stages.scoring.storage.lease`), so no second run can score into it.

Fault tolerance is Ray's own. Ray Data's actor pools default to `max_restarts=-1` (a lost actor is
recreated wherever a node has room) and `max_task_retries=-1` (the blocks in flight on it are
resubmitted), which is what scoring needs: a block scored twice writes the same part file again, whole.
Those defaults are kept rather than passed again (passing them is deprecated since Ray 2.60 and goes in
2.64); `tests/scoring/cluster/test_ray_cluster.py` loses a node mid-run to prove them. Errors raised by the scoring itself are
not retried (`DataContext.actor_task_retry_on_errors = False`: scoring is deterministic, so the block
would fail again) and no block is dropped (`max_errored_blocks = 0`): both Ray's defaults, set here so
that nothing else in the process changes them. The run then stops naming the block and its first row
id, and the parts already written stay for the rerun; `raise_original_map_exception = True` lets that
error reach the driver as itself (Ray Data otherwise wraps it in a `UserCodeException` that arrives
without it).

The driver joins the cluster at `RAY_ADDRESS` when it is set, and otherwise the one last started on
this machine (`ray start`) or a new one of its own. Every node must reach `export.output` at the
driver's absolute path and `infer.output` at its URL (or the same absolute path on a shared disk).
"""

from __future__ import annotations

import json
import logging
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
from stages.core.params import Params
from stages.graph.verdict import Identity, check_verdict, model_digests, verdict_message, verified_identity
from stages.scoring.cluster.actor import BLOCKS_FILE, GOLD_TYPE, WORDS_TYPE, BlockScorer
from stages.scoring.cluster.health import NodeWatch, recovery_of
from stages.scoring.cluster.resources import actor_runtime
from stages.scoring.datasets.blocks import empty_dataset
from stages.scoring.metrics import Recovery, Tally, build_metrics
from stages.scoring.reuse.plan import scoring_blocks
from stages.scoring.reuse.store import ScoreStore, open_store
from stages.scoring.score import BlockFailed
from stages.scoring.served import ServedModel, load_framing
from stages.scoring.storage.locations import Location, atomic_file, storage_error
from stages.scoring.storage.output import Lease, count_duplicate_ids, finish_output, hold_output, output_location
from stages.scoring.storage.parts import PartFiles, fingerprint, parts_beside
from stages.scoring.windows import check_stride

log = logging.getLogger(__name__)


def write_blocks_file(params: Params, parts: PartFiles) -> int:
    """The dataset's blocks as one Parquet row group each, with their gold spans and words, beside the parts (kept for a
    rerun); their count."""
    infer = params.infer
    blocks_file = parts.directory.child(BLOCKS_FILE)
    if (blocks := blocks_written(blocks_file)) is not None:
        return blocks
    blocks = 0
    with atomic_file(blocks_file) as temporary:
        writer = None
        try:
            for block in scoring_blocks(params):
                table = pa.table(
                    {
                        "id": block.ids,
                        "text": block.texts,
                        "issue": pa.array(block.issues, pa.string()),
                        "gold": pa.array(block.gold or [None] * len(block.texts), GOLD_TYPE),
                        "words": pa.array(block.words or [None] * len(block.texts), WORDS_TYPE),
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(
                        temporary.path, table.schema, filesystem=temporary.filesystem, write_page_checksum=True
                    )
                writer.write_table(table, row_group_size=max(1, table.num_rows))
                blocks += 1
        finally:
            if writer is not None:
                writer.close()
        if not blocks:
            raise empty_dataset(infer.input)
    return blocks


def blocks_written(blocks_file: Location) -> int | None:
    """How many blocks an earlier run wrote into the blocks file; None if none, or if the file is damaged (warned about)."""
    if not blocks_file.exists():
        return None
    try:
        return pq.ParquetFile(blocks_file.filesystem.open_input_file(blocks_file.path)).num_row_groups
    except pa.ArrowInvalid as error:  # not Parquet (any more): damaged since it was written whole
        log.warning("%s is damaged (%s); writing the blocks file again", blocks_file.name, error)
        return None
    except (OSError, pa.ArrowException) as error:
        raise storage_error(blocks_file, error) from None


def score_blocks(
    params: Params, parts: PartFiles, blocks: list[int], lease: Lease, store: ScoreStore | None, served: Identity
) -> tuple[list[dict], NodeWatch]:
    """Score `blocks` on an actor pool spread over the cluster: each block's report as the actors finish them, and
    the watch that saw which nodes were lost meanwhile."""
    infer = params.infer
    context = ray.data.DataContext.get_current()
    context.actor_task_retry_on_errors = False  # deterministic scoring: a block that raised would raise again
    context.max_errored_blocks = 0  # a failed block stops the run; its rows are never dropped
    context.raise_original_map_exception = True  # our errors reach the driver as themselves, with their messages
    pending = ray.data.from_items([{"block": index} for index in blocks], override_num_blocks=len(blocks))
    scored = pending.map_batches(
        BlockScorer,
        fn_constructor_kwargs={
            "onnx_dir": str(Path(params.export.output).resolve()),
            "runtime": actor_runtime(params),
            "infer": infer,
            "parts": parts.directory,
            "run_id": lease.owner.run_id,
            "store": None if store is None else (store.root, store.model),
            "verdict": (str(Path(params.parity.verdict).resolve()), served, infer.allow_unverified),
        },
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=infer.ray_actors),
        num_cpus=infer.ray_cpus_per_actor,
        num_gpus=infer.ray_gpus_per_actor,
    )  # Ray Data places actors with its default SPREAD strategy: on as many nodes as the pool allows
    watch = NodeWatch()
    reports = []
    for row in scored.iter_rows():
        reports.append(json.loads(row["report"]))
        lease.check()
        watch.look()
    watch.look(now=True)
    return reports, watch


def connect() -> bool:
    """Join the Ray cluster at `RAY_ADDRESS`; without it, `ray.init()`'s default: the cluster last started on
    this machine, or a new one here. True if this call connected (and so disconnects at the end)."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    log.info("joining the Ray cluster at %s", address or "(RAY_ADDRESS not set: local)")
    ray.init(address=address or None)
    return True


def our_error_in(error: BaseException) -> UserError | BlockFailed | None:
    """The `UserError` or `BlockFailed` a Ray task raised, unwrapped from Ray's exception wrappers, if that failed."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError | BlockFailed) and not isinstance(current, ray.exceptions.RayError):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return None


def score_on_cluster(
    params: Params, parts: PartFiles, blocks: list[int], lease: Lease, store: ScoreStore | None, served: Identity
) -> tuple[list[dict], Recovery]:
    """`score_blocks` on the cluster, a task's `UserError` re-raised as itself and a failed block named; the
    reports, and what the run recovered from."""
    started_ray = connect()
    try:
        reports, watch = score_blocks(params, parts, blocks, lease, store, served)
        return reports, recovery_of(watch, parts.directory, lease.owner.run_id, len(parts.rescored))
    except Exception as error:
        cause = our_error_in(error)
        if cause is None or cause is error:
            raise
        message = str(cause).splitlines()[0]  # Ray Data appends its retry advice on further lines
        if isinstance(cause, UserError):
            raise UserError(message) from None
        raise BlockFailed(message) from error
    finally:
        if started_ray:
            ray.shutdown()


def score_with_ray(params: Params) -> dict:
    """Engine `ray`: score `infer.input` into `infer.output` on a Ray Data actor pool; returns the metrics."""
    output = output_location(params.infer.output)
    with hold_output(output) as lease:
        check_stride(params.infer.long_text, params.infer.stride, load_framing(Path(params.export.output)))
        started = time.perf_counter()
        digests = model_digests(Path(params.export.output))
        verification = run_verification(params, digests)
        store = open_store(params, verification["served"], digests)
        tally, reports, recovery = score_and_finish(params, output, lease, store, verification)
        seconds = time.perf_counter() - started
        duplicate_ids = count_duplicate_ids(output)
    rows_per_node = Counter()
    for report in reports:
        rows_per_node[report["node"]] += report["tally"]["rows"]
    return {"verified": verification["verified"], "verification": verification} | build_metrics(
        tally,
        seconds,
        engine="ray",
        provider=",".join(sorted({report["provider"] for report in reports})),
        threads=params.infer.ray_actors * actor_runtime(params).intra_op_num_threads,
        peak_rss_mb=max([peak_rss_mb(), *(report["peak_rss_mb"] for report in reports)]),
        duplicate_ids=duplicate_ids,
        rows_per_node=dict(rows_per_node),
        recovery=recovery,
        store=store.summary() if store is not None else None,
        aggregation=params.infer.aggregation,
    )


def run_verification(params: Params, digests: dict[str, str]) -> dict:
    """What the run's rows are keyed for and every actor must serve: what the parity verdict verified for these model
    files; without one (`infer.allow_unverified`), what a session here serves with the actors' settings."""
    verdict = Path(params.parity.verdict)
    if (verified := verified_identity(verdict, digests)) is not None:
        return {"verified": True, "verdict": str(verdict), "served": dict(verified)}
    check_verdict(verdict, digests, {}, params.infer.allow_unverified)  # names what is missing, unless allowed
    served = ServedModel.load(Path(params.export.output), actor_runtime(params)).runner.identity
    return {"verified": False, "reason": verdict_message(verdict, digests, served), "served": served}


def score_and_finish(
    params: Params, output: Location, lease: Lease, store: ScoreStore | None, verification: dict
) -> tuple[Tally, list[dict], Recovery]:
    """Stage the blocks, score the unfinished ones on the cluster, finish the output: the tally, the actors'
    reports, and what the run recovered from."""
    infer = params.infer
    served = verification["served"]
    parts = PartFiles.for_run(parts_beside(output), fingerprint(params, served), verification)
    blocks = write_blocks_file(params, parts)
    resumed = {index: done for index in range(blocks) if (done := parts.finished(index)) is not None}
    todo = [index for index in range(blocks) if index not in resumed]
    log.info("%d blocks: %d finished by an earlier run, %d to score", blocks, len(resumed), len(todo))
    reports, recovery = score_on_cluster(params, parts, todo, lease, store, served) if todo else ([], Recovery())
    tally = Tally()
    for report in reports:
        tally.add(Tally.from_record(report["tally"]))
    for done in resumed.values():
        done.resumed()
        tally.add(done)
    lease.check()
    finish_output(PartFiles(parts.directory), output, infer.input)  # with the parts the actors wrote
    return tally, reports, recovery
