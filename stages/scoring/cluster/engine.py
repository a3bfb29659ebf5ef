"""Engine `ray` of stage `infer`: the local engine's blocks, read and scored on a Ray Data pipeline, resumably.

Nothing is read on the driver: it lists the files of `infer.input` (their names and sizes only) and hands their
numbers to Ray Data. A task per file (`stages.scoring.cluster.actor.read_files`), run where Ray places it, reads the
file from its local path or object store with the local engine's reader and bad-row checks, and cuts it into the
same content-defined blocks (`stages.scoring.reuse.plan.file_blocks_numbered`: cut and numbered from their own file,
so an edit changes only its block and the score store reuses the rest). The blocks stream through bounded queues
(Ray Data's backpressure) to a pool of CPU actors that tokenise them (`infer.ray_tokenizers`), then to an actor pool
spread over the cluster's nodes; each of those holds one onnxruntime session, plans the batches and scores a block
with `stages.scoring.score`, and writes its part file, exactly as the local engine would. The
driver only collects one small report per block, then finishes the output from the parts like the local engine. So
the first part is written as soon as the first block is read, the dataset is never copied, a driver killed at any
moment resumes from the finished parts, and both engines write identical outputs. The driver holds the output's
lease for the whole run (`stages.scoring.storage.lease`), so no second run can score into it.

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

import ray
import ray.data

from stages.core.errors import UserError
from stages.core.memory import peak_rss_mb
from stages.core.params import Params
from stages.graph.verdict import Identity, check_verdict, model_digests, verdict_message, verified_identity
from stages.scoring.cluster.actor import BlockScorer, BlockTokenizer, read_files
from stages.scoring.cluster.health import NodeWatch, recovery_of
from stages.scoring.cluster.resources import actor_runtime, check_room
from stages.scoring.datasets.blocks import check_id_type, dataset_files, empty_dataset
from stages.scoring.metrics import Recovery, Tally, build_metrics
from stages.scoring.reuse.store import ScoreStore, open_store
from stages.scoring.score import BlockFailed
from stages.scoring.served import ServedModel, load_framing
from stages.scoring.storage.locations import Location
from stages.scoring.storage.output import Lease, count_duplicate_ids, finish_output, hold_output, output_location
from stages.scoring.storage.parts import PartFiles, fingerprint, parts_beside
from stages.scoring.windows import check_stride

log = logging.getLogger(__name__)
ONE_BLOCK_EACH = 1  # Ray Data's block size target, in bytes: each of our blocks is a Ray Data block of its own
READERS = 4  # files read at once at most (each task reads one file, block by block)
MB = 1 << 20


def score_blocks(
    params: Params, parts: PartFiles, lease: Lease, store: ScoreStore | None, served: Identity
) -> tuple[list[dict], NodeWatch]:
    """Read and score every block of the dataset on the cluster: each block's report as the actors finish them
    (finished parts passed through), and the watch that saw which nodes were lost meanwhile."""
    check_room(params.infer, [node["Resources"] for node in ray.nodes() if node["Alive"]])
    context = ray.data.DataContext.get_current()
    context.actor_task_retry_on_errors = False  # deterministic scoring: a block that raised would raise again
    context.max_errored_blocks = 0  # a failed block stops the run; its rows are never dropped
    context.raise_original_map_exception = True  # our errors reach the driver as themselves, with their messages
    context.target_max_block_size = ONE_BLOCK_EACH  # each block goes on as it is cut, to whichever actor is free
    queue_mb = params.infer.ray_queue_mb  # what the blocks waiting between the steps may hold (None: Ray Data's budget)
    context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(  # set anew for each run
        object_store_memory=None if queue_mb is None else queue_mb * MB
    )
    watch = NodeWatch()
    reports = []
    for row in scoring_pipeline(params, parts, lease, store, served).iter_rows():
        reports.append(json.loads(row["report"]))
        lease.check()
        watch.look()
    watch.look(now=True)
    return reports, watch


def scoring_pipeline(
    params: Params, parts: PartFiles, lease: Lease, store: ScoreStore | None, served: Identity
) -> ray.data.Dataset:
    """The steps, each its own pool: read tasks (one per file), tokenising CPU actors, scoring actors."""
    infer = params.infer
    files = [source for source, _ in dataset_files(infer.input)]
    onnx_dir, store_at = str(Path(params.export.output).resolve()), None if store is None else (store.root, store.model)
    listed = ray.data.from_items([{"file": number} for number in range(len(files))], override_num_blocks=len(files))
    blocks = listed.map_batches(
        read_files,
        fn_kwargs={"params": params, "files": files, "parts": parts.directory},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=0,  # reading waits on storage mostly; Ray Data's backpressure bounds how far it runs ahead
        compute=ray.data.TaskPoolStrategy(size=min(len(files), READERS)),
    )
    tokenised = blocks.map_batches(
        BlockTokenizer,
        fn_constructor_kwargs={"onnx_dir": onnx_dir, "infer": infer, "store": store_at},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=infer.ray_tokenizers),
        num_cpus=infer.ray_cpus_per_tokenizer,
    )
    return tokenised.map_batches(
        BlockScorer,
        fn_constructor_kwargs={
            "onnx_dir": onnx_dir,
            "runtime": actor_runtime(params),
            "infer": infer,
            "parts": parts.directory,
            "run_id": lease.owner.run_id,
            "store": store_at,
            "verdict": (str(Path(params.parity.verdict).resolve()), served, infer.allow_unverified),
        },
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            min_size=infer.ray_actors, max_size=infer.ray_max_actors or infer.ray_actors
        ),
        num_cpus=infer.ray_cpus_per_actor,
        num_gpus=infer.ray_gpus_per_actor,
    )  # Ray Data places actors with its default SPREAD strategy: on as many nodes as the pool allows


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
    params: Params, parts: PartFiles, lease: Lease, store: ScoreStore | None, served: Identity
) -> tuple[list[dict], Recovery]:
    """`score_blocks` on the cluster, a task's `UserError` re-raised as itself and a failed block named; the
    reports, and what the run recovered from."""
    started_ray = connect()
    try:
        reports, watch = score_blocks(params, parts, lease, store, served)
        rescored = sum(report["rescored"] for report in reports)
        return reports, recovery_of(watch, parts.directory, lease.owner.run_id, rescored)
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
    scored = [report for report in reports if not report["resumed"]]
    rows_per_node = Counter()
    for report in scored:
        rows_per_node[report["node"]] += report["tally"]["rows"]
    return {"verified": verification["verified"], "verification": verification} | build_metrics(
        tally,
        seconds,
        engine="ray",
        provider=",".join(sorted({report["provider"] for report in scored})) or verification["served"]["provider"],
        threads=actors_started(params, scored) * actor_runtime(params).intra_op_num_threads,
        peak_rss_mb=max([peak_rss_mb(), *(report["peak_rss_mb"] for report in scored)]),
        duplicate_ids=duplicate_ids,
        rows_per_node=dict(rows_per_node),
        recovery=recovery,
        store=store.summary() if store is not None else None,
        aggregation=params.infer.aggregation,
    )


def actors_started(params: Params, scored: list[dict]) -> int:
    """The pool's actors: the `ray_actors` it starts with, or more where it grew (those that scored a block)."""
    return max(params.infer.ray_actors, len({report["actor"] for report in scored}))


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
    """Read and score the dataset on the cluster, finish the output: the tally, the blocks' reports, and what the
    run recovered from."""
    infer = params.infer
    parts = PartFiles.for_run(parts_beside(output), fingerprint(params, verification["served"]), verification)
    reports, recovery = score_on_cluster(params, parts, lease, store, verification["served"])
    if not reports:
        raise empty_dataset(infer.input)
    check_id_types(reports, params)
    resumed = [report for report in reports if report["resumed"]]
    log.info(
        "%d blocks: %d finished by an earlier run, %d scored", len(reports), len(resumed), len(reports) - len(resumed)
    )
    tally = Tally()
    for report in reports:
        done = Tally.from_record(report["tally"])
        tally.add(done.resumed() if report["resumed"] else done)
    lease.check()
    finish_output(PartFiles(parts.directory), output, infer.input)  # with the parts the actors wrote
    return tally, reports, recovery


def check_id_types(reports: list[dict], params: Params) -> None:
    """The files of a directory dataset share one id type, as the local engine requires, checked in block order."""
    ordered = sorted(reports, key=lambda report: report["number"])
    for report in ordered:
        check_id_type(
            report["file"], report["id_type"], ordered[0]["id_type"], params.infer.id_column, params.infer.input
        )
