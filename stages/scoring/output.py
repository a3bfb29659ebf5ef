"""The predictions file: its schema, and writing scored blocks into it in input order, atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.core.atomic import atomic_path
from stages.scoring.dataset import empty_dataset

SPAN_TYPE = pa.struct(
    [("label", pa.string()), ("start", pa.int32()), ("end", pa.int32()), ("text", pa.string()), ("score", pa.float32())]
)


def release_freed_memory() -> None:
    """Arrow buffers from the system allocator: the default (mimalloc) keeps freed pages, and a long scoring run's
    RSS then varies by hundreds of MB between identical runs."""
    pa.set_memory_pool(pa.system_memory_pool())


def output_schema(id_type: pa.DataType, probabilities: bool) -> pa.Schema:
    """One row per input row; per-token lists aligned with each other."""
    fields = [
        ("id", id_type),
        ("n_tokens", pa.int32()),
        ("truncated", pa.bool_()),
        ("skipped_reason", pa.string()),
        ("label_ids", pa.list_(pa.int16())),
        ("labels", pa.list_(pa.string())),
        ("starts", pa.list_(pa.int32())),
        ("ends", pa.list_(pa.int32())),
        ("spans", pa.list_(SPAN_TYPE)),
    ]
    if probabilities:
        fields.append(("probabilities", pa.list_(pa.list_(pa.float32()))))
    return pa.schema(fields)


def write_predictions(tables: Iterable[pa.Table], output: Path, source: str) -> None:
    """Write the scored blocks, in order, into `output`; it appears (atomically) only when all are written.

    No blocks at all means the dataset `source` has no rows: a `UserError`, and no file.
    """
    with atomic_path(output) as temporary:
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(temporary, table.schema, compression="zstd")
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise empty_dataset(source)


def count_duplicate_ids(output: Path) -> int:
    """Rows of the written predictions whose id an earlier row already has (only the id column is read)."""
    ids = pq.read_table(output, columns=["id"]).column("id")
    return len(ids) - pc.count_distinct(ids).as_py()
