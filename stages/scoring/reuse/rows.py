"""The stored rows of one model, sorted by row key: a run finds its blocks' rows with a binary search
instead of building a dictionary entry per stored row (a store holds every row of every run)."""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from stages.scoring.reuse.keys import KEY_BYTES


class StoredRow(NamedTuple):
    """Where a row's stored scores are (entry, row of its part), and its content token count (a tuple: a run makes
    one per row it reuses)."""

    entry: str
    row: int
    content_tokens: int


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


def key_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column of `KEY_BYTES`-byte keys as a uint8 matrix, one key per row (no copy where it can be avoided)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    return data[array.offset * KEY_BYTES : (array.offset + len(array)) * KEY_BYTES].reshape(-1, KEY_BYTES)


class RowIndex:
    """Each stored row's key, batch context, entry, row and content token count, sorted by key once the first
    lookup needs them; a dropped entry's rows are no longer found."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, pa.Table]] = []
        self.dropped: set[str] = set()
        self.lock = threading.Lock()
        self.sorted: tuple[np.ndarray, ...] | None = None

    def add(self, entry: str, rows: pa.Table) -> None:
        """An entry's rows table (`key`, `context`, `content_tokens`, in the part's row order)."""
        self.entries.append((entry, rows))
        self.sorted = None

    def drop(self, entry: str) -> None:
        self.dropped.add(entry)

    def find(self, keys: list[bytes]) -> list[dict[bytes, StoredRow] | None]:
        """Each key's stored rows by batch context (the first stored wins), or None."""
        if not self.entries:
            return [None] * len(keys)
        wanted = np.frombuffer(b"".join(keys), dtype=f"S{KEY_BYTES}")
        assert len(wanted) == len(keys), "row keys are KEY_BYTES long"
        sorted_keys, order, entry_of, row_of, contexts, tokens = self.arrays()
        starts = np.searchsorted(sorted_keys, wanted, side="left")
        stops = np.searchsorted(sorted_keys, wanted, side="right")
        found: list[dict[bytes, StoredRow] | None] = [None] * len(keys)
        names = [entry for entry, _ in self.entries]
        once = np.flatnonzero(stops - starts == 1)  # most keys: stored once, looked up with array operations
        positions = order[starts[once]]
        context_bytes = np.ascontiguousarray(contexts[positions]).tobytes()
        columns = (once.tolist(), entry_of[positions].tolist(), row_of[positions].tolist(), tokens[positions].tolist())
        for number, (index, entry, row, count) in enumerate(zip(*columns, strict=True)):
            if names[entry] not in self.dropped:
                context = context_bytes[number * KEY_BYTES : (number + 1) * KEY_BYTES]
                found[index] = {context: StoredRow(names[entry], row, count)}
        for index in np.flatnonzero(stops - starts > 1).tolist():
            stored: dict[bytes, StoredRow] = {}
            for position in order[starts[index] : stops[index]].tolist():
                if names[entry_of[position]] not in self.dropped:
                    row = StoredRow(names[entry_of[position]], int(row_of[position]), int(tokens[position]))
                    stored.setdefault(contexts[position].tobytes(), row)
            found[index] = stored or None
        return found

    def arrays(self) -> tuple[np.ndarray, ...]:
        with self.lock:
            if self.sorted is None:
                self.sorted = self.build()
            return self.sorted

    def build(self) -> tuple[np.ndarray, ...]:
        tables = [rows for _, rows in self.entries]
        keys = np.concatenate([key_matrix(rows.column("key")) for rows in tables])
        contexts = np.concatenate([key_matrix(rows.column("context")) for rows in tables])
        tokens = np.concatenate([rows.column("content_tokens").to_numpy() for rows in tables])
        entry_of = np.repeat(np.arange(len(tables)), [rows.num_rows for rows in tables])
        row_of = np.concatenate([np.arange(rows.num_rows) for rows in tables])
        flat = np.ascontiguousarray(keys).view(f"S{KEY_BYTES}").ravel()
        order = np.argsort(flat, kind="stable")  # rows of one key keep the store's order: the first stored wins
        return flat[order], order, entry_of, row_of, contexts, tokens
