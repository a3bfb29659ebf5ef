"""Reading a text dataset (Parquet, CSV, JSONL) in bounded chunks, with ids kept and texts made safe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from stages.errors import UserError

FORMATS = (".parquet", ".csv", ".jsonl")


@dataclass(frozen=True)
class Chunk:
    """Consecutive dataset rows: their ids (any Arrow type) and their texts, made safe to tokenise.

    Policy: a null text is scored as "" (counted in `null_texts`); bytes that are not valid UTF-8
    are decoded with U+FFFD replacement characters (counted in `invalid_utf8`); any other non-string
    value is scored as its string form.
    """

    ids: pa.Array
    texts: list[str]
    null_texts: int
    invalid_utf8: int


def iter_chunks(path: Path, text_column: str, id_column: str, chunk_rows: int) -> Iterator[Chunk]:
    """Yield the dataset's rows in order, `chunk_rows` at a time, reading no more than that at once."""
    if not path.is_file():
        raise UserError(f"dataset not found: {path} (infer.input)")
    if path.suffix not in FORMATS:
        raise UserError(f"dataset {path} has an unknown format; infer.input must end in one of {', '.join(FORMATS)}")
    batches = {".parquet": _parquet_batches, ".csv": _csv_batches, ".jsonl": _jsonl_batches}[path.suffix]
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches(path, text_column, id_column, chunk_rows):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield _to_chunk(table.slice(0, chunk_rows), text_column, id_column)
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield _to_chunk(pa.Table.from_batches(pending).combine_chunks(), text_column, id_column)


def _require_columns(path: Path, columns: list[str], text_column: str, id_column: str) -> None:
    for param, column in (("infer.text_column", text_column), ("infer.id_column", id_column)):
        if column not in columns:
            raise UserError(f"dataset {path} has no column {column!r} ({param}); its columns are: {', '.join(columns)}")


def _parquet_batches(path: Path, text_column: str, id_column: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        source = pq.ParquetFile(path)
    except pa.ArrowInvalid as error:
        raise UserError(f"dataset {path} is not a readable Parquet file: {error}") from None
    _require_columns(path, source.schema_arrow.names, text_column, id_column)
    yield from source.iter_batches(batch_size=chunk_rows, columns=[id_column, text_column])


def _csv_batches(path: Path, text_column: str, id_column: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    header = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 16)).schema.names
    _require_columns(path, header, text_column, id_column)
    # Texts are read as bytes and decoded here, so invalid UTF-8 costs one row, not the run.
    convert = pa_csv.ConvertOptions(
        column_types={text_column: pa.binary(), id_column: pa.string()},
        include_columns=[id_column, text_column],
        strings_can_be_null=True,
    )
    yield from pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 22), convert_options=convert)


def _jsonl_batches(path: Path, text_column: str, id_column: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    with path.open(encoding="utf-8", errors="replace") as stream:
        rows: list[dict] = []
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"dataset {path} line {number} is not JSON: {error}") from None
            if number == 1:
                _require_columns(path, list(record), text_column, id_column)
            rows.append({id_column: record.get(id_column), text_column: record.get(text_column)})
            if len(rows) == chunk_rows:
                yield _json_batch(rows, text_column, id_column)
                rows = []
        if rows:
            yield _json_batch(rows, text_column, id_column)


def _json_batch(rows: list[dict], text_column: str, id_column: str) -> pa.RecordBatch:
    texts = [
        value if isinstance(value, str) or value is None else json.dumps(value)
        for value in (row[text_column] for row in rows)
    ]
    return pa.RecordBatch.from_pydict(
        {id_column: [row[id_column] for row in rows], text_column: pa.array(texts, pa.string())}
    )


def _to_chunk(table: pa.Table, text_column: str, id_column: str) -> Chunk:
    texts, null_texts, invalid_utf8 = [], 0, 0
    for value in table.column(text_column).to_pylist():
        if value is None:
            null_texts += 1
            texts.append("")
        elif isinstance(value, bytes):
            text = value.decode("utf-8", errors="replace")
            invalid_utf8 += text != value.decode("utf-8", errors="ignore")
            texts.append(text)
        else:
            texts.append(value if isinstance(value, str) else str(value))
    return Chunk(
        ids=table.column(id_column).combine_chunks(), texts=texts, null_texts=null_texts, invalid_utf8=invalid_utf8
    )
