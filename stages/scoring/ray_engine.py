"""Engine `ray` of stage `infer`: the local engine's scoring, spread over a Ray Data actor pool.

Ray Data reads the dataset (Parquet and CSV with the local engine's column types; JSON Lines line by
line, as the local engine reads them), cuts it into blocks of `infer.block_rows` rows, and
`map_batches` hands each block to an actor that holds one onnxruntime session and runs
`stages.scoring.score.score_rows`: bad rows, long texts, labels and spans are the local engine's.
Blocks come back in input order (`preserve_order`); the driver writes them into `infer.output`
(atomically) and adds up their tallies into the local engine's `metrics/infer.json` keys.

The driver joins the cluster at `RAY_ADDRESS` when it is set, and otherwise the one last started on
this machine (`ray start`) or a new one of its own. Every node must reach `infer.input` and
`export.output` at the driver's absolute paths (a shared filesystem); only the driver writes
`infer.output`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import ray
import ray.data
from ray.data.datasource import FileBasedDatasource

from stages.core.errors import UserError
from stages.core.memory import peak_rss_mb
from stages.core.params import InferParams, Params, RuntimeParams
from stages.graph.session import CUDA, provider_of
from stages.scoring.dataset import csv_convert_options, empty_dataset, iter_blocks, jsonl_batches, make_block
from stages.scoring.metrics import Tally, build_metrics
from stages.scoring.output import count_duplicate_ids, release_freed_memory, write_predictions
from stages.scoring.score import score_rows
from stages.scoring.served import ServedModel, load_framing
from stages.scoring.windows import check_stride

log = logging.getLogger(__name__)

REPORT_COLUMN = "__block_report"  # a block's tally, provider and memory (JSON, first row only); never written


class BlockScorer:
    """A Ray Data actor: one onnxruntime session, scoring blocks of rows with the local engine's code."""

    def __init__(self, onnx_dir: str, runtime: RuntimeParams, infer: InferParams, texts_are_json: bool) -> None:
        release_freed_memory()
        self.served = ServedModel.load(Path(onnx_dir), runtime)
        self.infer = infer
        self.texts_are_json = texts_are_json

    def __call__(self, batch: pa.Table) -> pa.Table:
        values = batch.column(self.infer.text_column).to_pylist()
        if self.texts_are_json:
            values = [json.loads(value) for value in values]
        block = make_block(batch.column(self.infer.id_column).combine_chunks(), values, self.infer.input)
        table, tally = score_rows(self.served, block, self.infer)
        report = {"tally": dataclasses.asdict(tally), "provider": provider_of(self.served.session)}
        report["peak_rss_mb"] = peak_rss_mb()
        reports = [json.dumps(report), *[None] * (table.num_rows - 1)] if table.num_rows else []
        return table.append_column(REPORT_COLUMN, pa.array(reports, pa.string()))


class JsonLinesDatasource(FileBasedDatasource):
    """JSON Lines read as the local engine reads them: bad UTF-8 replaced, blank lines skipped.

    Text values are passed on JSON-encoded, so that a column mixing strings, nulls and numbers
    reaches `make_block` as it is (Arrow's JSON reader would reject it).
    """

    def __init__(self, path: str, infer: InferParams) -> None:
        super().__init__(path)
        self.id_column, self.text_column, self.block_rows = infer.id_column, infer.text_column, infer.block_rows

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        for batch in jsonl_batches(f, path, self.text_column, self.id_column, self.block_rows):
            yield pa.Table.from_batches([batch])


def read_rows(source: Path, infer: InferParams) -> ray.data.Dataset:
    """The dataset's id and text columns as Ray Data reads them, typed as the local engine types them."""
    if source.suffix == ".parquet":
        return ray.data.read_parquet(str(source), columns=[infer.id_column, infer.text_column])
    if source.suffix == ".csv":
        return ray.data.read_csv(str(source), convert_options=csv_convert_options(infer.text_column, infer.id_column))
    return ray.data.read_datasource(JsonLinesDatasource(str(source), infer))


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


def scored_rows(params: Params, source: Path, onnx_dir: Path) -> ray.data.Dataset:
    """The lazy pipeline: read, cut into blocks of `infer.block_rows` rows, score on the actor pool."""
    infer = params.infer
    # Exact blocks: the actors batch (and pad) exactly as the local engine does.
    blocks = read_rows(source, infer).repartition(target_num_rows_per_block=infer.block_rows, strict=True)
    return blocks.map_batches(
        BlockScorer,
        fn_constructor_kwargs={
            "onnx_dir": str(onnx_dir),
            "runtime": actor_runtime(params),
            "infer": infer,
            "texts_are_json": source.suffix == ".jsonl",
        },
        batch_size=infer.block_rows,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=infer.ray_actors),
        num_cpus=infer.ray_cpus_per_actor,
        num_gpus=infer.ray_gpus_per_actor,
    )


def scored_tables(rows: ray.data.Dataset, reports: list[dict]) -> Iterator[pa.Table]:
    """The scored blocks in input order, their reports collected into `reports` as they pass."""
    for batch in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
        reports += [json.loads(report) for report in batch.column(REPORT_COLUMN).drop_null().to_pylist()]
        yield batch.drop_columns([REPORT_COLUMN])


def connect() -> bool:
    """Join the Ray cluster at `RAY_ADDRESS`; without it, `ray.init()`'s default: the cluster last started on
    this machine, or a new one here. True if this call connected (and so disconnects at the end)."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    log.info("joining the Ray cluster at %s", address or "(RAY_ADDRESS not set: local)")
    ray.init(address=address or None)
    return True


def warn_if_reading_starves(infer: InferParams) -> None:
    """An actor pool that holds every CPU leaves none for the read tasks, and Ray Data then waits forever."""
    cpus = ray.cluster_resources().get("CPU", 0.0)
    pool = infer.ray_actors * infer.ray_cpus_per_actor
    if pool > cpus - 1:
        log.warning(
            "the actor pool asks for %s of the cluster's %s CPUs, leaving less than one for reading: Ray Data may "
            "wait forever unless the cluster grows; lower infer.ray_actors or infer.ray_cpus_per_actor (fractions allowed)",
            pool,
            cpus,
        )


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


def score_with_ray(params: Params) -> dict:
    """Engine `ray`: score `infer.input` into `infer.output` on a Ray Data actor pool; returns the metrics."""
    infer = params.infer
    source = Path(infer.input).resolve()
    onnx_dir = Path(params.export.output).resolve()
    check_stride(infer.long_text, infer.stride, load_framing(onnx_dir))
    if (
        next(iter_blocks(infer.input, infer.text_column, infer.id_column, 1), None) is None
    ):  # also checks file and columns
        raise empty_dataset(infer.input)
    runtime = actor_runtime(params)
    started_ray = connect()
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        warn_if_reading_starves(infer)
        started = time.perf_counter()
        try:
            reports: list[dict] = []
            write_predictions(
                scored_tables(scored_rows(params, source, onnx_dir), reports), Path(infer.output), infer.input
            )
        except Exception as error:
            cause = user_error_in(error)
            if cause is None or cause is error:
                raise
            raise cause from None
        seconds = time.perf_counter() - started
    finally:
        if started_ray:
            ray.shutdown()
    tally = Tally()
    for report in reports:
        tally.add(Tally(**report["tally"]))
    return build_metrics(
        tally,
        seconds,
        engine="ray",
        provider=",".join(sorted({report["provider"] for report in reports})),
        threads=infer.ray_actors * runtime.intra_op_num_threads,
        peak_rss_mb=max([peak_rss_mb(), *(report["peak_rss_mb"] for report in reports)]),
        duplicate_ids=count_duplicate_ids(Path(infer.output)),
    )
