"""The Ray engine's three steps on the workers: read a dataset file into its blocks, tokenise blocks, and score them
into part files.

`read_files` reads one file of `infer.input` where a Ray task runs (local path or object store), cuts it into the
blocks the local engine cuts (`stages.scoring.reuse.plan.file_blocks_numbered`: by content, numbered from the file
alone), and passes each on as one row; a block whose part an earlier run finished is passed on as its tally instead.
`BlockTokenizer`, a CPU actor holding the tokenizer alone, applies the bad-row policy and tokenises each block's rows
that the score store lacks (`stages.scoring.prepare.tokenise_block`), so that the model's actors do not wait on it.
`BlockScorer`, an actor holding one onnxruntime session, plans the batches (they depend on the model's measured batch
invariance) and scores each block as the local engine would, saves its part
(`stages.scoring.storage.parts`) and then leaves a mark, `scored-<run>-<block>-<random>`, beside it: a block with two
marks of one run was scored twice (its actor died after writing the part and Ray ran the block again), which the
driver counts. Each step returns one small report per block; no step writes the dataset anywhere else.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import secrets
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import ray

from stages.core.memory import peak_rss_mb
from stages.core.params import InferParams, Params, RuntimeParams
from stages.graph.verdict import Identity, check_run_member, model_digests
from stages.scoring.prepare import TokenisedBlock, tokenise_block
from stages.scoring.reuse.plan import file_blocks_numbered
from stages.scoring.reuse.store import ScoreStore
from stages.scoring.score import block_part, naming_block
from stages.scoring.served import ServedModel
from stages.scoring.storage.locations import Location
from stages.scoring.storage.output import release_freed_memory
from stages.scoring.storage.parts import PartFiles
from stages.scoring.tokens import TextTokenizer

SCORED_MARK = "scored-"
READ_SCHEMA = pa.schema(
    [
        ("number", pa.int64()),  # the block's number (`FILE_BLOCKS`)
        ("file", pa.string()),  # the file it was read from, and its ids' type: the driver checks they agree
        ("id_type", pa.string()),
        ("block", pa.binary()),  # the pickled `Block` to score, or null where an earlier run finished it
        ("finished", pa.string()),  # that finished part's tally record (JSON), else null
        ("rescored", pa.bool_()),  # the block had a damaged part, which is scored again
    ]
)


def read_files(batch: pa.Table, params: Params, files: list[Location], parts: Location) -> Iterator[pa.Table]:
    """A Ray Data task: each given file of the dataset (by its number in `files`) read as its numbered blocks, one
    row each."""
    finished = PartFiles(parts)
    for file_number in batch.column("file").to_pylist():
        source = files[file_number]
        for number, block in file_blocks_numbered(params, file_number, source):
            tally = finished.finished(number)
            row = {
                "number": [number],
                "file": [source.name],
                "id_type": [str(block.ids.type)],
                "block": [None if tally is not None else pickle.dumps(block, protocol=5)],
                "finished": [None if tally is None else json.dumps(dataclasses.asdict(tally))],
                "rescored": [number in finished.rescored],
            }
            yield pa.table(row, schema=READ_SCHEMA)


def scored_mark(parts: Location, run_id: str, index: int) -> Location:
    """A new mark that run `run_id` scored block `index` (one per time it was scored)."""
    return parts.child(f"{SCORED_MARK}{run_id}-{index:06d}-{secrets.token_hex(4)}")


class BlockTokenizer:
    """A Ray Data actor on CPUs: the exported model's tokenizer (no session); tokenises the blocks `read_files` reads
    (a block the store holds whole passes as it is: the scorer takes the store's copy)."""

    def __init__(self, onnx_dir: str, infer: InferParams, store: tuple[Location, str] | None) -> None:
        self.tokenizer = TextTokenizer.load(Path(onnx_dir))
        self.infer = infer
        self.store = None if store is None else ScoreStore.open(*store)

    def __call__(self, batch: pa.Table) -> pa.Table:
        tokenised = []
        for number, data in zip(batch.column("number").to_pylist(), batch.column("block").to_pylist(), strict=True):
            block = None if data is None else pickle.loads(data)
            if block is not None and (self.store is None or not self.store.holds(block)):
                with naming_block(number, block):
                    block = tokenise_block(self.tokenizer, block, self.infer, self.store)
            tokenised.append(None if block is None else pickle.dumps(block, protocol=5))
        return batch.set_column(batch.schema.get_field_index("block"), "block", pa.array(tokenised, pa.binary()))


class BlockScorer:
    """A Ray Data actor: one onnxruntime session; scores the blocks `BlockTokenizer` tokenised into part files."""

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
        context = ray.get_runtime_context()
        self.node, self.actor = context.get_node_id()[:12], context.get_actor_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        reports = []
        for row in batch.to_pylist():
            report = {key: row[key] for key in ("number", "file", "id_type", "rescored")}
            if row["finished"] is not None:
                reports.append(json.dumps({**report, "tally": json.loads(row["finished"]), "resumed": True}))
                continue
            index, ready = row["number"], pickle.loads(row["block"])
            tokenised = ready if isinstance(ready, TokenisedBlock) else None  # else a block the store holds whole
            block = ready if tokenised is None else tokenised.block
            with naming_block(index, block):
                part = block_part(self.served, block, self.infer, self.store, tokenised)
            self.parts.save(index, part)
            scored_mark(self.parts.directory, self.run_id, index).write_text(json.dumps({"node": self.node}))
            scored = {"tally": dataclasses.asdict(part.tally), "node": self.node, "actor": self.actor}
            scored["peak_rss_mb"] = peak_rss_mb()
            reports.append(json.dumps({**report, **scored, "resumed": False, "provider": self.served.runner.provider}))
        return pa.table({"report": pa.array(reports, pa.string())})
