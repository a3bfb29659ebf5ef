"""The stored rows of one model, sorted by row key and batch context: a run finds its blocks' rows with array
operations (a binary search over the keys' first words) instead of a dictionary entry or an object per stored row
(a store holds every row of every run)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from stages.scoring.reuse.keys import KEY_BYTES

WORDS = KEY_BYTES // 8  # a key as little-endian 64-bit words


def key_words(keys: list[bytes]) -> np.ndarray:
    """Keys as a uint64 matrix, one key per row."""
    return np.frombuffer(b"".join(keys), dtype="<u8").reshape(-1, WORDS)


def key_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column of `KEY_BYTES`-byte keys as a uint64 matrix, one key per row."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    rows = data[array.offset * KEY_BYTES : (array.offset + len(array)) * KEY_BYTES]
    return np.ascontiguousarray(rows).view("<u8").reshape(-1, WORDS)


def gather(tables: list[pa.Table], table_of: np.ndarray, row_of: np.ndarray) -> pa.Table:
    """Row i is row `row_of[i]` of `tables[table_of[i]]`: one table in one chunk. Runs of consecutive rows are sliced
    (a few edits in a block of stored rows copy the block once), else rows are taken one by one."""
    if not len(table_of):
        return tables[0].slice(0, 0).combine_chunks()
    breaks = np.flatnonzero((np.diff(table_of) != 0) | (np.diff(row_of) != 1)) + 1
    if len(breaks) > len(table_of) // 8:
        offsets = np.cumsum([0, *(table.num_rows for table in tables)])[:-1]
        return pa.concat_tables(tables).take(offsets[table_of] + row_of).combine_chunks()
    starts, stops = [0, *breaks.tolist()], [*breaks.tolist(), len(table_of)]
    pieces = [
        tables[table_of[start]].slice(row_of[start], stop - start) for start, stop in zip(starts, stops, strict=True)
    ]
    return pa.concat_tables(pieces).combine_chunks()


@dataclass(frozen=True)
class StoredRows:
    """The stored rows, one per row key and batch context (the first stored), sorted by key then context: where each
    is (entry, row of its part) and its content token count. Immutable: a run's lookups stay valid while another
    block drops a damaged entry (reading that entry then fails its check, and the block is planned again)."""

    names: list[str]  # entry names, indexed by `entries`
    keys: np.ndarray  # uint64 [n, WORDS]
    contexts: np.ndarray  # uint64 [n, WORDS]
    entries: np.ndarray  # int64 [n]
    rows: np.ndarray  # int64 [n]
    tokens: np.ndarray  # int64 [n]

    @classmethod
    def build(cls, entries: list[tuple[str, pa.Table]]) -> StoredRows:
        """From entries' rows tables (`key`, `context`, `content_tokens`, in their parts' row order), in store order."""
        tables = [rows for _, rows in entries]
        keys = np.concatenate([key_matrix(rows.column("key")) for rows in tables] or [np.empty((0, WORDS), "<u8")])
        contexts = np.concatenate([key_matrix(rows.column("context")) for rows in tables] or [keys])
        tokens = np.concatenate([rows.column("content_tokens").to_numpy() for rows in tables] or [np.empty(0)])
        entry_of = np.repeat(np.arange(len(tables)), [rows.num_rows for rows in tables])
        row_of = np.concatenate([np.arange(rows.num_rows) for rows in tables] or [np.empty(0, np.int64)])
        order = np.lexsort([*contexts.T[::-1], *keys.T[::-1]])  # by key, then context, then store order (stable)
        keys, contexts = keys[order], contexts[order]
        first = np.ones(len(order), dtype=bool)  # the first stored row of each key and context
        first[1:] = (keys[1:] != keys[:-1]).any(axis=1) | (contexts[1:] != contexts[:-1]).any(axis=1)
        order = order[first]
        return cls(
            [name for name, _ in entries],
            keys[first],
            contexts[first],
            entry_of[order].astype(np.int64),
            row_of[order].astype(np.int64),
            tokens[order].astype(np.int64),
        )

    def first(self, keys: np.ndarray) -> np.ndarray:
        """Each key's first stored row (its lowest context), or -1."""
        found = np.full(len(keys), -1, dtype=np.int64)
        if not len(self.keys):
            return found
        heads = self.keys[:, 0]
        starts = np.searchsorted(heads, keys[:, 0], side="left")
        stops = np.searchsorted(heads, keys[:, 0], side="right")
        near = stops > starts
        exact = near & (self.keys[np.minimum(starts, len(heads) - 1)] == keys).all(axis=1)
        found[exact] = starts[exact]
        for index in np.flatnonzero(near & ~exact).tolist():  # another key shares the first word: look further
            equal = (self.keys[starts[index] : stops[index]] == keys[index]).all(axis=1)
            if equal.any():
                found[index] = starts[index] + int(np.argmax(equal))
        return found

    def in_context(self, keys: np.ndarray, contexts: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Each key's stored row with the given batch context, or -1 (`first`: the keys' first stored rows)."""
        found = np.full(len(keys), -1, dtype=np.int64)
        active = np.flatnonzero(first >= 0)
        position = first[active]
        while len(active):  # along each key's rows (one per context, usually one or two)
            match = (self.contexts[position] == contexts[active]).all(axis=1)
            found[active[match]] = position[match]
            following = position + 1
            more = ~match & (following < len(self.keys))
            more[more] = (self.keys[following[more]] == keys[active[more]]).all(axis=1)
            active, position = active[more], following[more]
        return found


EMPTY = StoredRows.build([])


class RowIndex:
    """The rows tables of a model's entries, sorted into `StoredRows` once a lookup needs them; a dropped entry's rows
    are no longer found."""

    def __init__(self) -> None:
        self.entries: dict[str, pa.Table] = {}
        self.lock = threading.Lock()
        self.sorted: StoredRows | None = None

    def add(self, entry: str, rows: pa.Table) -> None:
        """An entry's rows table (`key`, `context`, `content_tokens`, in the part's row order)."""
        with self.lock:
            self.entries[entry] = rows
            self.sorted = None

    def drop(self, entry: str) -> None:
        with self.lock:
            if self.entries.pop(entry, None) is not None:
                self.sorted = None

    def stored(self) -> StoredRows:
        with self.lock:
            if self.sorted is None:
                self.sorted = StoredRows.build(list(self.entries.items()))
            return self.sorted
