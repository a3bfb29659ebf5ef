"""The Ray engine's scoring actor: one onnxruntime session that scores staged blocks into part files.

Each actor reads its block's row group from the staged input (`input.parquet` beside the parts), scores
it as the local engine would, saves the part (`stages.scoring.parts`), and then leaves a mark,
`scored-<run>-<block>-<random>`, beside it: a block with two marks of one run was scored twice (its
actor died after writing the part and Ray ran the block again), which the driver counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from stages.core.errors import UserError
from stages.core.memory import peak_rss_mb
from stages.core.params import InferParams, Params, RuntimeParams
from stages.graph.session import CUDA, provider_of
from stages.scoring.dataset import Block
from stages.scoring.output import release_freed_memory
from stages.scoring.parts import PartFiles
from stages.scoring.score import naming_block, score_rows
from stages.scoring.served import ServedModel
from stages.scoring.storage import Location, storage_error

STAGED_INPUT = "input.parquet"
SCORED_MARK = "scored-"


def staged_reader(staged: Location) -> pq.ParquetFile:
    """The staged blocks, each data page checked against the checksum written with it."""
    try:
        return pq.ParquetFile(staged.filesystem.open_input_file(staged.path), page_checksum_verification=True)
    except (OSError, pa.ArrowException) as error:
        raise storage_error(staged, error) from None


def read_block(staged: pq.ParquetFile, location: Location, index: int) -> Block:
    """Block `index` of the staged input; a page that fails its checksum is a `UserError` saying what to delete."""
    try:
        rows = staged.read_row_group(index)
    except (OSError, pa.ArrowException) as error:
        if "checksum" not in str(error).lower():
            raise storage_error(location, error) from None
        raise UserError(
            f"{location.name} is damaged (block {index}: {error}); delete it and run again: the dataset is staged "
            "again and the finished parts are kept"
        ) from None
    return Block(rows.column("id").combine_chunks(), rows.column("text").to_pylist(), rows.column("issue").to_pylist())


def scored_mark(parts: Location, run_id: str, index: int) -> Location:
    """A new mark that run `run_id` scored block `index` (one per time it was scored)."""
    return parts.child(f"{SCORED_MARK}{run_id}-{index:06d}-{secrets.token_hex(4)}")


class BlockScorer:
    """A Ray Data actor: one onnxruntime session; scores staged blocks into part files."""

    def __init__(self, onnx_dir: str, runtime: RuntimeParams, infer: InferParams, parts: Location, run_id: str) -> None:
        release_freed_memory()
        self.served = ServedModel.load(Path(onnx_dir), runtime)
        self.infer = infer
        self.parts = PartFiles(parts)
        self.run_id = run_id
        self.staged_location = parts.child(STAGED_INPUT)
        self.staged = staged_reader(self.staged_location)
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def __call__(self, batch: pa.Table) -> pa.Table:
        reports = []
        for index in batch.column("block").to_pylist():
            block = read_block(self.staged, self.staged_location, index)
            with naming_block(index, block):
                table, tally = score_rows(self.served, block, self.infer)
            self.parts.save(index, table, tally)
            scored_mark(self.parts.directory, self.run_id, index).write_text(json.dumps({"node": self.node}))
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
