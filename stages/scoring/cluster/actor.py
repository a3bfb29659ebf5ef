"""The Ray engine's scoring actor: one onnxruntime session that scores the blocks file's blocks into part files.

Each actor reads its block's row group from the blocks file (`blocks.parquet` beside the parts), scores
it as the local engine would, saves the part (`stages.scoring.storage.parts`), and then leaves a mark,
`scored-<run>-<block>-<random>`, beside it: a block with two marks of one run was scored twice (its
actor died after writing the part and Ray ran the block again), which the driver counts.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from stages.core.errors import UserError
from stages.core.memory import peak_rss_mb
from stages.core.params import InferParams, RuntimeParams
from stages.graph.verdict import Identity, check_run_member, model_digests
from stages.scoring.datasets.blocks import Block
from stages.scoring.reuse.store import ScoreStore
from stages.scoring.score import block_part, naming_block
from stages.scoring.served import ServedModel
from stages.scoring.storage.locations import Location, storage_error
from stages.scoring.storage.output import release_freed_memory
from stages.scoring.storage.parts import PartFiles

BLOCKS_FILE = "blocks.parquet"  # the dataset as blocks, one Parquet row group each
GOLD_TYPE = pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("label", pa.string())]))  # a row's spans
WORDS_TYPE = pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64())]))  # a row's gold words
SCORED_MARK = "scored-"


def blocks_reader(blocks_file: Location) -> pq.ParquetFile:
    """The blocks file, each data page checked against the checksum written with it."""
    try:
        return pq.ParquetFile(blocks_file.filesystem.open_input_file(blocks_file.path), page_checksum_verification=True)
    except (OSError, pa.ArrowException) as error:
        raise storage_error(blocks_file, error) from None


def read_block(blocks_file: pq.ParquetFile, location: Location, index: int) -> Block:
    """Block `index` of the blocks file; a page that fails its checksum is a `UserError` saying what to delete."""
    try:
        rows = blocks_file.read_row_group(index)
    except (OSError, pa.ArrowException) as error:
        if "checksum" not in str(error).lower():
            raise storage_error(location, error) from None
        raise UserError(
            f"{location.name} is damaged (block {index}: {error}); delete it and run again: the dataset is read into blocks "
            "again and the finished parts are kept"
        ) from None
    gold, words = rows.column("gold").to_pylist(), rows.column("words").to_pylist()
    return Block(
        rows.column("id").combine_chunks(),
        rows.column("text").to_pylist(),
        rows.column("issue").to_pylist(),
        None
        if gold[0] is None
        else [[(span["start"], span["end"], span["label"]) for span in spans] for spans in gold],
        words=None if words[0] is None else [[(word["start"], word["end"]) for word in row] for row in words],
    )


def scored_mark(parts: Location, run_id: str, index: int) -> Location:
    """A new mark that run `run_id` scored block `index` (one per time it was scored)."""
    return parts.child(f"{SCORED_MARK}{run_id}-{index:06d}-{secrets.token_hex(4)}")


class BlockScorer:
    """A Ray Data actor: one onnxruntime session; scores the blocks file's blocks into part files."""

    def __init__(
        self,
        onnx_dir: str,
        runtime: RuntimeParams,
        infer: InferParams,
        parts: Location,
        run_id: str,
        store: tuple[Location, str] | None,
        verdict: tuple[str, Identity, bool],
    ) -> None:
        release_freed_memory()
        self.store = None if store is None else ScoreStore.open(*store)
        self.served = ServedModel.load(Path(onnx_dir), runtime)
        path, expected, allow_unverified = verdict  # checked on this node, before its first row
        check_run_member(
            Path(path), model_digests(Path(onnx_dir)), self.served.runner.identity, expected, allow_unverified
        )
        self.infer = infer
        self.parts = PartFiles(parts)
        self.run_id = run_id
        self.blocks_location = parts.child(BLOCKS_FILE)
        self.blocks_file = blocks_reader(self.blocks_location)
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def __call__(self, batch: pa.Table) -> pa.Table:
        reports = []
        for index in batch.column("block").to_pylist():
            block = read_block(self.blocks_file, self.blocks_location, index)
            with naming_block(index, block):
                part = block_part(self.served, block, self.infer, self.store)
            self.parts.save(index, part)
            scored_mark(self.parts.directory, self.run_id, index).write_text(json.dumps({"node": self.node}))
            report = {"tally": dataclasses.asdict(part.tally), "node": self.node, "peak_rss_mb": peak_rss_mb()}
            reports.append(json.dumps({**report, "provider": self.served.runner.provider}))
        return pa.table({"report": pa.array(reports, pa.string())})
