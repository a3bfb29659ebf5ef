"""Reading a text dataset (Parquet, CSV, JSONL) in blocks of rows, with ids kept and texts made safe."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from stages.core.errors import UserError

FORMATS = (".parquet", ".csv", ".jsonl")


TEXT_ISSUES = ("null", "not_string", "invalid_utf8", "empty", "whitespace", "control_chars")
ALLOWED_CONTROLS = frozenset("\t\n\r")


@dataclass(frozen=True)
class Block:
    """A block of consecutive dataset rows: ids (any Arrow type), texts safe to tokenise, and what was wrong with each.

    A null or non-string value becomes "" and bytes that are not UTF-8 are decoded with U+FFFD
    replacement characters; `issues[i]` names the first problem of row i (one of `TEXT_ISSUES`) or
    is None. What happens to such rows is `infer.bad_rows`' decision, not the reader's.
    """

    ids: pa.Array
    texts: list[str]
    issues: list[str | None]


def text_issue(text: str) -> str | None:
    """The problem of a decoded text, if any: empty, whitespace-only, or control characters."""
    if not text:
        return "empty"
    if text.isspace():
        return "whitespace"
    if any(unicodedata.category(char) == "Cc" and char not in ALLOWED_CONTROLS for char in text):
        return "control_chars"
    return None


def iter_blocks(path: Path, text_column: str, id_column: str, block_rows: int) -> Iterator[Block]:
    """Yield the dataset's rows in order, in blocks of `block_rows` rows, reading no more than that at once."""
    if not path.is_file():
        raise UserError(f"dataset not found: {path} (infer.input)")
    if path.suffix not in FORMATS:
        raise UserError(f"dataset {path} has an unknown format; infer.input must end in one of {', '.join(FORMATS)}")
    if path.suffix == ".jsonl":
        yield from _jsonl_blocks(path, text_column, id_column, block_rows)
        return
    batches = {".parquet": _parquet_batches, ".csv": _csv_batches}[path.suffix]
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches(path, text_column, id_column, block_rows):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= block_rows:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield _table_block(table.slice(0, block_rows), text_column, id_column)
            rest = table.slice(block_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield _table_block(pa.Table.from_batches(pending).combine_chunks(), text_column, id_column)


def _require_columns(path: Path, columns: list[str], text_column: str, id_column: str) -> None:
    for param, column in (("infer.text_column", text_column), ("infer.id_column", id_column)):
        if column not in columns:
            raise UserError(f"dataset {path} has no column {column!r} ({param}); its columns are: {', '.join(columns)}")


def _parquet_batches(path: Path, text_column: str, id_column: str, block_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        source = pq.ParquetFile(path)
    except pa.ArrowInvalid as error:
        raise UserError(f"dataset {path} is not a readable Parquet file: {error}") from None
    _require_columns(path, source.schema_arrow.names, text_column, id_column)
    yield from source.iter_batches(batch_size=block_rows, columns=[id_column, text_column])


def _csv_batches(path: Path, text_column: str, id_column: str, block_rows: int) -> Iterator[pa.RecordBatch]:
    header = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 16)).schema.names
    _require_columns(path, header, text_column, id_column)
    convert = csv_convert_options(text_column, id_column)
    yield from pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 22), convert_options=convert)


def csv_convert_options(text_column: str, id_column: str) -> pa_csv.ConvertOptions:
    """How CSV columns are read (by every engine): ids as strings, texts as bytes, empty cells as null."""
    # Texts are read as bytes and decoded here, so invalid UTF-8 costs one row, not the run.
    return pa_csv.ConvertOptions(
        column_types={text_column: pa.binary(), id_column: pa.string()},
        include_columns=[id_column, text_column],
        strings_can_be_null=True,
    )


def jsonl_records(lines: Iterable[str], path: Path | str) -> Iterator[dict]:
    """The JSON objects of a JSON Lines stream, blank lines skipped; a bad line is a `UserError` naming it."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"dataset {path} line {number} is not JSON: {error}") from None


def _jsonl_blocks(path: Path, text_column: str, id_column: str, block_rows: int) -> Iterator[Block]:
    with path.open(encoding="utf-8", errors="replace") as stream:
        ids: list = []
        values: list = []
        for record in jsonl_records(stream, path):
            if not ids and not values:
                _require_columns(path, list(record), text_column, id_column)
            ids.append(record.get(id_column))
            values.append(record.get(text_column))
            if len(values) == block_rows:
                yield make_block(id_array(ids, path), values)
                ids, values = [], []
        if values:
            yield make_block(id_array(ids, path), values)


def id_array(ids: list, path: Path) -> pa.Array:
    """Ids as one Arrow array; ids of mixed types are a `UserError` naming the dataset."""
    try:
        return pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise UserError(
            f"dataset {path}: the id column mixes types ({error}); give every row an id of one type"
        ) from None


def _table_block(table: pa.Table, text_column: str, id_column: str) -> Block:
    return make_block(table.column(id_column).combine_chunks(), table.column(text_column).to_pylist())


def make_block(ids: pa.Array, values: list) -> Block:
    """Decode and classify raw text values (str, bytes, None or anything else)."""
    texts: list[str] = []
    issues: list[str | None] = []
    for value in values:
        if value is None:
            text, issue = "", "null"
        elif isinstance(value, bytes):
            text = value.decode("utf-8", errors="replace")
            issue = "invalid_utf8" if text != value.decode("utf-8", errors="ignore") else text_issue(text)
        elif isinstance(value, str):
            text, issue = value, text_issue(value)
        else:
            text, issue = "", "not_string"
        texts.append(text)
        issues.append(issue)
    return Block(ids=ids, texts=texts, issues=issues)


def empty_dataset(path: Path | str) -> UserError:
    """The error for a dataset with no rows, wherever it is found out."""
    return UserError(f"dataset {path} has no rows (infer.input)")


def row_count(path: Path) -> int | None:
    """Rows in the dataset if known without reading it (Parquet metadata), else None."""
    return pq.ParquetFile(path).metadata.num_rows if path.suffix == ".parquet" else None
