"""Reading a text dataset (Parquet, CSV, JSONL) in blocks of rows, with ids kept and texts made safe.

A dataset that cannot be read as a whole (missing, empty, corrupt, unparsable, a text column that is
not text, rows without an id) is a `UserError` naming the file, the problem and the fix. A row whose
text is bad (null, not a string, not UTF-8, empty, control characters) is read, and what happens
to it is `infer.bad_rows`' decision.
"""

from __future__ import annotations

import io
import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stages.core.errors import UserError
from stages.scoring.storage import Location, locate, storage_error

FORMATS = (".parquet", ".csv", ".jsonl")
TEXT_ISSUES = ("null", "not_string", "invalid_utf8", "empty", "whitespace", "control_chars")
ALLOWED_CONTROLS = frozenset("\t\n\r")
CSV_BLOCK_BYTES = 1 << 22
CSV_HEADER_BYTES = 1 << 16


@dataclass(frozen=True)
class Block:
    """A block of consecutive dataset rows: ids, texts safe to tokenise, and what was wrong with each text.

    A null or non-string value becomes "" and bytes that are not UTF-8 are decoded with U+FFFD
    replacement characters; `issues[i]` names the first problem of row i (one of `TEXT_ISSUES`) or
    is None.
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


def open_dataset(name: str) -> Location:
    """The dataset `infer.input` names, checked to be a non-empty file of a known format."""
    source = locate(name)
    info = source.info()
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"dataset not found: {name} (infer.input)")
    if info.type != pafs.FileType.File:
        raise UserError(f"dataset {name} is a directory; infer.input must name one {'/'.join(FORMATS)} file")
    if source.suffix not in FORMATS:
        raise UserError(f"dataset {name} has an unknown format; infer.input must end in one of {', '.join(FORMATS)}")
    if info.size == 0:
        raise UserError(f"dataset {name} is empty (0 bytes); write it again or point infer.input at the right file")
    return source


def iter_blocks(name: str, text_column: str, id_column: str, block_rows: int) -> Iterator[Block]:
    """Yield the dataset's rows in order, in blocks of `block_rows` rows, reading no more than that at once."""
    source = open_dataset(name)
    readers = {".parquet": _parquet_batches, ".csv": _csv_batches, ".jsonl": _jsonl_batches}
    json_texts = source.suffix == ".jsonl"
    first_row = 0
    try:
        for table in _rebatch(readers[source.suffix](source, text_column, id_column, block_rows), block_rows):
            values = table.column(text_column).to_pylist()
            if json_texts:
                values = [json.loads(value) for value in values]
            yield make_block(table.column(id_column).combine_chunks(), values, name, first_row)
            first_row += table.num_rows
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
        raise unreadable(source, error) from None


def unreadable(source: Location, error: BaseException) -> UserError:
    """What a reader's failure means for the user, in one line."""
    if isinstance(error, OSError) and not isinstance(error, pa.ArrowException):
        return storage_error(source, error)
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if "utf8" in reason.lower() or isinstance(error, UnicodeDecodeError):
        return UserError(
            f"dataset {source.name} cannot be read: {reason[:300]}; write it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)"
        )
    fixes = {
        ".parquet": "write the file again (it is truncated or not Parquet)",
        ".csv": "fix that row (quote fields holding commas, quotes or newlines; one value per column)",
        ".jsonl": "fix that line",
    }
    return UserError(f"dataset {source.name} cannot be read: {reason[:300]}; {fixes[source.suffix]}")


def _rebatch(batches: Iterable[pa.RecordBatch], block_rows: int) -> Iterator[pa.Table]:
    """The batches' rows regrouped into tables of exactly `block_rows` rows (the last one may be shorter)."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= block_rows:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield table.slice(0, block_rows)
            rest = table.slice(block_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending).combine_chunks()


def _require_columns(name: str, columns: list[str], text_column: str, id_column: str) -> None:
    for param, column in (("infer.text_column", text_column), ("infer.id_column", id_column)):
        if column not in columns:
            raise UserError(f"dataset {name} has no column {column!r} ({param}); its columns are: {', '.join(columns)}")


def _parquet_batches(source: Location, text_column: str, id_column: str, block_rows: int) -> Iterator[pa.RecordBatch]:
    reader = pq.ParquetFile(source.filesystem.open_input_file(source.path))
    schema = reader.schema_arrow
    _require_columns(source.name, schema.names, text_column, id_column)
    kind = schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)):
        raise UserError(
            f"dataset {source.name} column {text_column!r} (infer.text_column) holds {kind} values, not text; "
            "set infer.text_column to the column with the texts"
        )
    yield from reader.iter_batches(batch_size=block_rows, columns=[id_column, text_column])


def _csv_batches(source: Location, text_column: str, id_column: str, block_rows: int) -> Iterator[pa.RecordBatch]:
    header = pa_csv.open_csv(
        source.filesystem.open_input_stream(source.path), read_options=pa_csv.ReadOptions(block_size=CSV_HEADER_BYTES)
    ).schema.names
    _require_columns(source.name, header, text_column, id_column)
    yield from pa_csv.open_csv(
        source.filesystem.open_input_stream(source.path),
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        convert_options=csv_convert_options(text_column, id_column),
    )


def csv_convert_options(text_column: str, id_column: str) -> pa_csv.ConvertOptions:
    """How CSV columns are read (by every engine): ids as strings, texts as bytes, empty cells as null.

    Texts are read as bytes and decoded per row, so text that is not UTF-8 costs one row, not the run.
    """
    return pa_csv.ConvertOptions(
        column_types={text_column: pa.binary(), id_column: pa.string()},
        include_columns=[id_column, text_column],
        strings_can_be_null=True,
    )


def jsonl_records(lines: Iterable[str], name: str) -> Iterator[dict]:
    """The JSON objects of a JSON Lines stream, blank lines skipped; a bad line is a `UserError` naming it."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"dataset {name} line {number} is not JSON ({error}); fix or remove that line") from None
        if not isinstance(record, dict):
            raise UserError(f"dataset {name} line {number} is not a JSON object; write one object per line")
        yield record


def _jsonl_batches(source: Location, text_column: str, id_column: str, block_rows: int) -> Iterator[pa.RecordBatch]:
    with source.filesystem.open_input_stream(source.path) as raw:
        yield from jsonl_batches(raw, source.name, text_column, id_column, block_rows)


def jsonl_batches(
    raw: io.RawIOBase | pa.NativeFile, name: str, text_column: str, id_column: str, block_rows: int
) -> Iterator[pa.RecordBatch]:
    """JSON Lines as batches of ids and JSON-encoded texts, so a text column mixing types survives Arrow.

    Bytes that are not UTF-8 are replaced (U+FFFD) as they are read; the first record must have both columns.
    """
    ids: list = []
    values: list[str] = []
    for record in jsonl_records(io.TextIOWrapper(raw, encoding="utf-8", errors="replace"), name):
        if not ids:
            _require_columns(name, list(record), text_column, id_column)
        ids.append(record.get(id_column))
        values.append(json.dumps(record.get(text_column), ensure_ascii=False))
        if len(values) == block_rows:
            yield pa.record_batch({id_column: id_array(ids, name), text_column: pa.array(values, pa.string())})
            ids, values = [], []
    if values:
        yield pa.record_batch({id_column: id_array(ids, name), text_column: pa.array(values, pa.string())})


def id_array(ids: list, name: str) -> pa.Array:
    """Ids as one Arrow array; ids of mixed types are a `UserError` naming the dataset."""
    try:
        return pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise UserError(
            f"dataset {name}: the id column mixes types ({error}); give every row an id of one type"
        ) from None


def make_block(ids: pa.Array, values: list, name: str, first_row: int = 0) -> Block:
    """Decode and classify raw text values (str, bytes, None or anything else); every row needs an id."""
    if ids.null_count:
        row = first_row + next(index for index, valid in enumerate(ids.is_valid().to_pylist()) if not valid)
        raise UserError(
            f"dataset {name} row {row} has no id (infer.id_column); give every row an id, "
            "so that predictions can be joined back to their rows"
        )
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


def empty_dataset(name: str) -> UserError:
    """The error for a dataset with no rows, wherever it is found out."""
    return UserError(f"dataset {name} has no rows (infer.input); point infer.input at a dataset with rows")


def row_count(name: str) -> int | None:
    """Rows in the dataset if known without reading it (Parquet metadata), else None."""
    source = open_dataset(name)
    if source.suffix != ".parquet":
        return None
    try:
        return pq.ParquetFile(source.filesystem.open_input_file(source.path)).metadata.num_rows
    except (pa.ArrowException, OSError) as error:
        raise unreadable(source, error) from None
