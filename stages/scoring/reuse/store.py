"""The score store: each block scored once per model, kept write-once and verified, found again by its content.

Layout: `<store>/<model key>/<block key>.arrow`, the block's part file exactly as `infer` wrote it, beside
`<block key>.rows.arrow`, each row's key, batch context and content token count, and `<block key>.json`,
the block's tally and the size and SHA-256 of both files. A block key is the digest of the block's row keys,
ids and gold, so an unchanged block is its stored part, copied; a block with new rows takes each old row
whose batch context is unchanged from the part it is stored in. An entry is named by its content and written
whole (a temporary name, then rename or copy), so two runs sharing a store never corrupt it; an entry that is
not what its record says (truncated, bit-flipped) is deleted, warned about, and its rows are scored again.
Entries of other models are kept until `python -m tools.score_store prune` drops them.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from stages.core.errors import UserError
from stages.core.params import Params
from stages.graph.verdict import Identity
from stages.scoring.datasets.blocks import Block
from stages.scoring.metrics import Tally
from stages.scoring.reuse.keys import KEY_BYTES, block_keys, combined_key, model_key
from stages.scoring.reuse.rows import RowIndex, StoredRows
from stages.scoring.storage.locations import Location, locate
from stages.scoring.storage.parts import PART_SUFFIX, Part, decode_part, encode_part, part_seal

log = logging.getLogger(__name__)

KEY_TYPE = pa.binary(KEY_BYTES)
RECORD_SUFFIX = ".json"
ROWS_SUFFIX = ".rows" + PART_SUFFIX
DEFAULT_STORE = ".score-store"  # in the output's directory
OPEN_PARTS = 8  # stored parts kept read, for the blocks that reuse their rows


class DamagedEntry(Exception):
    """A stored part is not what its record says; its rows must be scored again."""


def store_location(params: Params) -> Location:
    """`infer.store`, or `.score-store` in the directory that holds `infer.output` (so that renaming the output
    keeps its scores); never inside the output, which DVC deletes before the stage runs."""
    output = locate(params.infer.output.rstrip("/"))
    store = locate(params.infer.store) if params.infer.store else output.sibling(DEFAULT_STORE)
    if store.path.rstrip("/") == output.path or store.path.startswith(output.path + "/"):
        raise UserError(
            f"infer.store = {store.name} is inside infer.output = {params.infer.output}, which is deleted before each "
            "run; put the store beside it (infer.store: null) or elsewhere"
        )
    return store


def open_store(params: Params, served: Identity, digests: Mapping[str, str]) -> ScoreStore | None:
    """The score store of the current model (its files' `digests`, served as `served`) with its index read, or None
    when `infer.reuse` is off."""
    if not params.infer.reuse:
        return None
    return ScoreStore.open(store_location(params), model_key(params, served, digests))


def block_key(block: Block) -> str:
    """The digest of what a block's part and tally depend on besides the model: its rows' keys, ids and gold (and the
    gold's words, where it names them: word-level entity counts are taken on them)."""
    gold = json.dumps(block.gold if block.words is None else [block.gold, block.words], default=str).encode()
    return combined_key([*block_keys(block), array_bytes(block.ids), gold]).hex()


def array_bytes(array: pa.Array) -> bytes:
    """An array as Arrow IPC bytes: its type and values, the same for equal arrays wherever they were sliced from."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("values", array.type)])) as writer:
        writer.write_batch(pa.record_batch([array], names=["values"]))
    return sink.getvalue().to_pybytes()


def key_array(keys: list[bytes]) -> pa.Array:
    """Keys as a fixed-size binary array (from one buffer: no conversion per key)."""
    return pa.FixedSizeBinaryArray.from_buffers(KEY_TYPE, len(keys), [None, pa.py_buffer(b"".join(keys))])


class ScoreStore:
    """The entries of one model: an index of their rows, their parts when a block reuses them."""

    def __init__(self, root: Location, model: str) -> None:
        self.root = root
        self.model = model
        self.directory = root.child(model)
        self.records: dict[str, dict] = {}
        self.rows = RowIndex()
        self.opened: OrderedDict[str, pa.Table] = OrderedDict()
        self.prepared = False

    @classmethod
    def open(cls, root: Location, model: str) -> ScoreStore:
        """The store of `model` under `root`, its index read (entries that cannot be read are dropped)."""
        store = cls(root, model)
        for record in store.directory.files():
            if record.base_name.endswith(RECORD_SUFFIX):
                store.index(record.base_name.removesuffix(RECORD_SUFFIX))
        return store

    def location(self, entry: str, suffix: str) -> Location:
        return self.directory.child(entry + suffix)

    def index(self, entry: str) -> None:
        try:
            record = json.loads(self.location(entry, RECORD_SUFFIX).read_bytes())
            rows = decode_part(self.verified(entry, ROWS_SUFFIX, record["rows"]))
        except (DamagedEntry, ValueError, KeyError, TypeError, pa.ArrowException) as error:
            self.drop(entry, f"cannot be read ({type(error).__name__})")
            return
        self.records[entry] = record
        self.rows.add(entry, rows)

    def verified(self, entry: str, suffix: str, seal: dict) -> bytes:
        data = self.location(entry, suffix).read_bytes()
        if part_seal(data) != seal:
            raise DamagedEntry(f"{entry}{suffix} is not what was written ({len(data)} bytes)")
        return data

    def drop(self, entry: str, damage: str) -> None:
        """Warn about a damaged entry, stop using it, and delete it so that it is written again."""
        log.warning("score store entry %s %s; its rows are scored again", self.location(entry, "").name, damage)
        self.records.pop(entry, None)
        self.opened.pop(entry, None)
        self.rows.drop(entry)
        for suffix in (RECORD_SUFFIX, PART_SUFFIX, ROWS_SUFFIX):
            with suppress(UserError):  # another run may have dropped it first; what matters is not using it
                self.location(entry, suffix).delete()

    def stored_rows(self) -> StoredRows:
        """The stored rows of the entries indexed and not dropped, sorted for lookups."""
        return self.rows.stored()

    def holds(self, block: Block) -> bool:
        """Whether `block` is stored whole (as indexed: `block` verifies it)."""
        return block_key(block) in self.records

    def block(self, block: Block) -> Part | None:
        """`block` as stored whole (same rows, ids and gold), verified, its tally's rows all reused; None if the store
        does not hold it (or held it damaged: then it is dropped)."""
        key = block_key(block)
        if key not in self.records:
            return None
        try:
            data = self.verified(key, PART_SUFFIX, self.records[key]["part"])
        except DamagedEntry as error:
            self.drop(key, str(error).removeprefix(key))
            return None
        record = self.records[key]
        return Part(data, Tally.from_record(record["tally"]).stored(), recorded=record["part"])

    def sources(self, stored: StoredRows, at: np.ndarray) -> tuple[list[pa.Table], np.ndarray, np.ndarray]:
        """The stored output columns (all but the id: ids are the input's) of the parts holding the rows at `at` in
        `stored`, and for each row its part's place in that list and its row there; `DamagedEntry` if a part fails its
        check (or was dropped since `stored` was sorted)."""
        entries, table_of = np.unique(stored.entries[at], return_inverse=True)
        tables = [self.part_table(stored.names[entry]).drop_columns(["id"]) for entry in entries.tolist()]
        return tables, table_of, stored.rows[at]

    def part_table(self, entry: str) -> pa.Table:
        if entry in self.opened:
            self.opened.move_to_end(entry)
            return self.opened[entry]
        if entry not in self.records:
            raise DamagedEntry(f"{entry} was dropped")
        try:
            data = self.verified(entry, PART_SUFFIX, self.records[entry]["part"])
        except DamagedEntry as error:
            self.drop(entry, str(error).removeprefix(entry))
            raise
        self.opened[entry] = decode_part(data)
        if len(self.opened) > OPEN_PARTS:
            self.opened.popitem(last=False)
        return self.opened[entry]

    def save(self, key: str, part: Part, rows: pa.Table) -> None:
        """Store a scored block: its part's bytes, its rows' keys (`rows`), then the record naming both."""
        if not self.prepared:
            self.prepare()
        row_data = encode_part(rows)
        self.location(key, PART_SUFFIX).write_bytes(part.data)
        self.location(key, ROWS_SUFFIX).write_bytes(row_data)
        record = {"tally": asdict(part.tally), "part": part.seal, "rows": part_seal(row_data)}
        self.location(key, RECORD_SUFFIX).write_text(json.dumps(record))

    def prepare(self) -> None:
        """The store's directory; a local one ignored by git, as DVC's own cache is."""
        self.prepared = True
        self.directory.make_directory()
        ignore = self.root.child(".gitignore")
        if self.root.is_local and not ignore.exists():
            ignore.write_text("*\n")

    def summary(self) -> dict:
        """Where the store is and what it held for this model when the run began."""
        rows = sum(record["tally"]["rows"] for record in self.records.values())
        stored = sum(record["part"]["bytes"] + record["rows"]["bytes"] for record in self.records.values())
        return {"location": self.root.name, "model": self.model[:16], "blocks": len(self.records), "rows": rows,
                "bytes": stored}  # fmt: skip
