"""The dataset formats' readers: each yields record batches of the columns asked for (`Columns`), in file order.

Parquet and CSV through Arrow (CSV texts as bytes, so text that is not UTF-8 costs one row, not the run), JSON
Lines value by value (JSON-encoded, so a column mixing types survives Arrow), and CoNLL files as sentences of
words and tags (a line's first and last fields; a blank line ends a sentence; `-DOCSTART-` lines skipped).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from stages.core.errors import UserError
from stages.core.params import AnnotationParams
from stages.scoring.storage.locations import Location

CSV_BLOCK_BYTES = 1 << 22
CSV_HEADER_BYTES = 1 << 16
CONLL_DOCUMENT_START = "-DOCSTART-"


@dataclass(frozen=True)
class Columns:
    """The columns a reader takes: the id, the text (None where it is built from the gold's words), the gold's."""

    id: str
    text: str | None
    gold_format: str  # spans, tags or none (`annotations.format`, resolved)
    gold: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [self.id, *([self.text] if self.text else []), *self.gold]


def column_names(source: Location, annotations: AnnotationParams | None) -> list[str]:
    """The dataset's columns, read from its head (a CoNLL file's are its ids, words and tags)."""
    if source.suffix == ".parquet":
        return pq.ParquetFile(source.filesystem.open_input_file(source.path)).schema_arrow.names
    if source.suffix == ".csv":
        return pa_csv.open_csv(
            source.filesystem.open_input_stream(source.path),
            read_options=pa_csv.ReadOptions(block_size=CSV_HEADER_BYTES),
        ).schema.names
    if source.suffix == ".conll":
        if annotations is None:
            raise UserError(
                f"dataset {source.name} is a CoNLL file: its rows are words and tags, read for parity and infer"
            )
        return ["id", annotations.words_column, annotations.tags_column]
    with source.filesystem.open_input_stream(source.path) as raw:
        lines = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
        return list(next(jsonl_records(lines, source.name), {}))


def _parquet_batches(source: Location, columns: Columns, block_rows: int) -> Iterator[pa.RecordBatch]:
    reader = pq.ParquetFile(source.filesystem.open_input_file(source.path))
    if columns.text is not None:
        kind = reader.schema_arrow.field(columns.text).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)):
            raise UserError(
                f"dataset {source.name} column {columns.text!r} (infer.text_column) holds {kind} values, not text; "
                "set infer.text_column to the column with the texts"
            )
    yield from reader.iter_batches(batch_size=block_rows, columns=columns.names)


def _csv_batches(source: Location, columns: Columns, block_rows: int) -> Iterator[pa.RecordBatch]:
    yield from pa_csv.open_csv(
        source.filesystem.open_input_stream(source.path),
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        convert_options=csv_convert_options(columns),
    )


def csv_convert_options(columns: Columns) -> pa_csv.ConvertOptions:
    """How CSV columns are read (by every engine): ids as strings, texts as bytes, gold as JSON text, empty cells as
    null.

    Texts are read as bytes and decoded per row, so text that is not UTF-8 costs one row, not the run.
    """
    types = {column: pa.string() for column in (columns.id, *columns.gold)}
    if columns.text:
        types[columns.text] = pa.binary()
    return pa_csv.ConvertOptions(column_types=types, include_columns=columns.names, strings_can_be_null=True)


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


def _jsonl_batches(source: Location, columns: Columns, block_rows: int) -> Iterator[pa.RecordBatch]:
    with source.filesystem.open_input_stream(source.path) as raw:
        yield from jsonl_batches(raw, source.name, columns, block_rows)


def jsonl_batches(
    raw: io.RawIOBase | pa.NativeFile, name: str, columns: Columns, block_rows: int
) -> Iterator[pa.RecordBatch]:
    """JSON Lines as batches of ids and JSON-encoded values, so a column mixing types survives Arrow.

    Bytes that are not UTF-8 are replaced (U+FFFD) as they are read.
    """
    ids: list = []
    values: dict[str, list[str]] = {column: [] for column in columns.names[1:]}

    def batch() -> pa.RecordBatch:
        return pa.record_batch(
            {
                columns.id: id_array(ids, name),
                **{column: pa.array(cells, pa.string()) for column, cells in values.items()},
            }
        )

    for record in jsonl_records(io.TextIOWrapper(raw, encoding="utf-8", errors="replace"), name):
        ids.append(record.get(columns.id))
        for column, cells in values.items():
            cells.append(json.dumps(record.get(column), ensure_ascii=False))
        if len(ids) == block_rows:
            yield batch()
            ids, values = [], {column: [] for column in values}
    if ids:
        yield batch()


def _conll_batches(source: Location, columns: Columns, block_rows: int) -> Iterator[pa.RecordBatch]:
    """Sentences of a CoNLL file as rows: id (the sentence's number), words, tags (a line's first and last fields)."""
    words_column, tags_column = columns.gold
    rows: list[list[tuple[str, str]]] = []
    first = 0
    for sentence in conll_sentences(source):
        rows.append(sentence)
        if len(rows) == block_rows:
            yield conll_batch(rows, first, columns.id, words_column, tags_column)
            first, rows = first + len(rows), []
    if rows:
        yield conll_batch(rows, first, columns.id, words_column, tags_column)


def conll_sentences(source: Location) -> Iterator[list[tuple[str, str]]]:
    """Each sentence's (word, tag) pairs; a line without a tag is a `UserError` naming it."""
    sentence: list[tuple[str, str]] = []
    with source.filesystem.open_input_stream(source.path) as raw:
        for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8", errors="replace"), start=1):
            fields = line.split()
            if fields and fields[0] != CONLL_DOCUMENT_START:
                if len(fields) < 2:
                    raise UserError(f"dataset {source.name} line {number} has no tag after its word; write `word tag`")
                sentence.append((fields[0], fields[-1]))
            elif sentence:
                yield sentence
                sentence = []
    if sentence:
        yield sentence


def conll_batch(
    sentences: list[list[tuple[str, str]]], first: int, id_column: str, words_column: str, tags_column: str
) -> pa.RecordBatch:
    return pa.record_batch(
        {
            id_column: pa.array(range(first, first + len(sentences)), pa.int64()),
            words_column: [[word for word, _ in sentence] for sentence in sentences],
            tags_column: [[tag for _, tag in sentence] for sentence in sentences],
        }
    )


def id_array(ids: list, name: str) -> pa.Array:
    """Ids as one Arrow array; ids of mixed types are a `UserError` naming the dataset."""
    try:
        return pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise UserError(
            f"dataset {name}: the id column mixes types ({error}); give every row an id of one type"
        ) from None


READERS = {".parquet": _parquet_batches, ".csv": _csv_batches, ".jsonl": _jsonl_batches, ".conll": _conll_batches}
