"""Reading a text dataset (Parquet, CSV, JSONL, CoNLL) in blocks of rows, with ids kept, texts made safe and gold
annotations, where the dataset has them, read as character spans (`stages.scoring.datasets.annotations`).

A dataset that cannot be read as a whole (missing, empty, corrupt, unparsable, a text column that is
not text, rows without an id) is a `UserError` naming the file, the problem and the fix. A row whose
text is bad (null, not a string, not UTF-8, empty, control characters) is read, and what happens
to it is `infer.bad_rows`' decision. A CoNLL file (`.conll`: a word and its tag last on each line, a blank
line between sentences, `-DOCSTART-` lines skipped) is read as rows of words and tags, ids counting sentences.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stages.core.errors import UserError
from stages.core.params import AnnotationParams
from stages.scoring.datasets.annotations import gold_columns, row_spans, tag_spans
from stages.scoring.datasets.readers import READERS, Columns, column_names
from stages.scoring.datasets.texts import decoded_texts, is_string, string_texts
from stages.scoring.quality import Span, Word
from stages.scoring.storage.locations import Location, locate, storage_error

FORMATS = tuple(READERS)


@dataclass(frozen=True)
class Block:
    """A block of consecutive dataset rows: ids, texts safe to tokenise, and what was wrong with each text.

    A null or non-string value becomes "" and bytes that are not UTF-8 are decoded with U+FFFD
    replacement characters; `issues[i]` names the first problem of row i (one of
    `stages.scoring.datasets.texts.TEXT_ISSUES`) or is None.
    """

    ids: pa.Array
    texts: list[str]
    issues: list[str | None]
    gold: list[list[Span]] | None = None  # each row's gold spans, where the dataset has annotations
    keys: list[bytes] | None = None  # each row's key (`stages.scoring.reuse.keys.row_keys`), once computed
    strings: pa.Array | None = None  # the texts as read, where they are Arrow strings: keys hash their UTF-8 bytes
    words: list[list[Word]] | None = None  # each row's gold words (character ranges), where the annotations tag words


def dataset_files(name: str, param: str = "infer.input") -> list[tuple[Location, pafs.FileInfo]]:
    """The files of the dataset `param` names, each with what its filesystem says of it: the file itself, or
    every data file under the directory (names starting with "." or "_", such as `_SUCCESS`, left out), in
    path order, all of one known format and none empty."""
    source = locate(name)
    info = source.info()
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"dataset not found: {name} ({param})")
    files = [(source, info)] if info.type == pafs.FileType.File else directory_files(source, param)
    for file, file_info in files:
        if file.suffix not in FORMATS:
            raise UserError(
                f"dataset {file.name} has an unknown format; {param} must be one file, or a directory of files, "
                f"ending in one of {', '.join(FORMATS)}"
            )
        if file_info.size == 0:
            raise UserError(
                f"dataset {file.name} is empty (0 bytes); write it again or point {param} at the right file"
            )
    return files


def directory_files(directory: Location, param: str) -> list[tuple[Location, pafs.FileInfo]]:
    """The data files under `directory`, in path order: of one format, and not CoNLL (its ids restart per file)."""
    try:
        found = directory.filesystem.get_file_info(pafs.FileSelector(directory.path, recursive=True))
    except (OSError, pa.ArrowException) as error:
        raise storage_error(directory, error) from None
    base = directory.path.rstrip("/") + "/"
    files = []
    for info in sorted(found, key=lambda info: info.path):
        relative = info.path.removeprefix(base)
        if info.type == pafs.FileType.File and not any(part[:1] in "._" for part in relative.split("/")):
            files.append((directory.child(relative), info))
    if not files:
        raise UserError(
            f"dataset {directory.name} is a directory without data files; put {'/'.join(FORMATS)} files in it"
        )
    suffixes = sorted({file.suffix for file, _ in files})
    if len(suffixes) > 1:
        raise UserError(
            f"dataset {directory.name} mixes formats ({', '.join(suffixes)}); keep one format per directory ({param})"
        )
    if suffixes == [".conll"]:
        raise UserError(
            f"dataset {directory.name} is a directory of CoNLL files, whose sentence ids restart in each file; "
            f"concatenate them into one (cat *.conll > all.conll) and point {param} at it"
        )
    return files


def iter_blocks(
    name: str,
    text_column: str,
    id_column: str,
    block_rows: int,
    annotations: AnnotationParams | None = None,
    param: str = "infer.input",
) -> Iterator[Block]:
    """Yield the dataset's rows in order (a directory's files in path order), in blocks of at most `block_rows`
    rows, reading no more than that at once; with `annotations`, each row's gold spans too. `param` names the
    dataset in errors."""
    id_type: pa.DataType | None = None
    for source, _ in dataset_files(name, param):
        for block in file_blocks(source, text_column, id_column, block_rows, annotations, param):
            id_type = id_type or block.ids.type
            check_id_type(source.name, str(block.ids.type), str(id_type), id_column, name)
            yield block


def check_id_type(file: str, found: str, expected: str, id_column: str, dataset: str) -> None:
    """Every file of a directory dataset has one id type (named as Arrow names it): else a `UserError` naming the
    file."""
    if found != expected:
        raise UserError(
            f"dataset {file} has ids of type {found} where the files before it have {expected} "
            f"({id_column!r}); write every file of {dataset} with one id type"
        )


def file_blocks(
    source: Location,
    text_column: str,
    id_column: str,
    block_rows: int,
    annotations: AnnotationParams | None,
    param: str,
) -> Iterator[Block]:
    """One file's rows in blocks of `block_rows` rows (the last one may be shorter)."""
    first_row = 0
    try:
        columns = dataset_columns(source, text_column, id_column, annotations, param)
        for table in _rebatch(READERS[source.suffix](source, columns, block_rows), block_rows):
            ids = table.column(columns.id).combine_chunks()
            if (texts := plain_strings(table, columns, source.suffix)) is not None:
                yield string_block(ids, texts, source.name, first_row)
            else:
                values = {column: table.column(column).to_pylist() for column in columns.names[1:]}
                if source.suffix == ".jsonl":
                    values = {column: [json.loads(value) for value in cells] for column, cells in values.items()}
                yield annotated_block(ids, values, columns, annotations, source.name, first_row)
            first_row += table.num_rows
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
        raise unreadable(source, error) from None


def plain_strings(table: pa.Table, columns: Columns, suffix: str) -> pa.Array | None:
    """The text column where its values are the texts as Arrow strings (not JSON-encoded, no gold words to build them
    from), to be checked with array operations; else None."""
    if columns.gold_format != "none" or columns.text is None or suffix == ".jsonl":
        return None
    texts = table.column(columns.text).combine_chunks()
    return texts if is_string(texts.type) else None


def dataset_columns(
    source: Location, text_column: str, id_column: str, annotations: AnnotationParams | None, param: str
) -> Columns:
    """Which columns to read: the id and text, and the gold's where `annotations` finds them; all checked present."""
    names = column_names(source, annotations)
    if not names:  # JSON Lines without a record
        raise empty_dataset(source.name, param)
    gold_format, gold = gold_columns(annotations, names, source.name) if annotations else ("none", ())
    text = None if gold_format == "tags" and text_column not in names else text_column
    for param, column in (("infer.text_column", text), ("infer.id_column", id_column)):
        if column is not None and column not in names:
            raise UserError(
                f"dataset {source.name} has no column {column!r} ({param}); its columns are: {', '.join(names)}"
            )
    return Columns(id_column, text, gold_format, gold)


def annotated_block(
    ids: pa.Array,
    values: dict[str, list],
    columns: Columns,
    annotations: AnnotationParams | None,
    name: str,
    first_row: int,
) -> Block:
    """A block of rows with their gold spans (`annotations`), texts built from the words where the dataset has none."""
    texts = values.get(columns.text) if columns.text else [None] * len(ids)
    if columns.gold_format == "none":
        return make_block(ids, texts, name, first_row)
    places = [f"dataset {name} row {first_row + index} (id {row_id!r})" for index, row_id in enumerate(ids.to_pylist())]
    if columns.gold_format == "spans":
        block = make_block(ids, texts, name, first_row)
        gold = [
            row_spans(value, text, where)
            for value, text, where in zip(values[columns.gold[0]], block.texts, places, strict=True)
        ]
        return dataclasses.replace(block, gold=gold)
    words, tags = (values[column] for column in columns.gold)
    built = [
        tag_spans(row_words, row_tags, text, annotations, where)
        for row_words, row_tags, text, where in zip(words, tags, texts, places, strict=True)
    ]
    block = make_block(ids, [text for text, _, _ in built], name, first_row)
    return dataclasses.replace(block, gold=[spans for _, spans, _ in built], words=[words for _, _, words in built])


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
        ".conll": "fix that line (a word, then its tag last)",
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


def make_block(ids: pa.Array, values: list, name: str, first_row: int = 0) -> Block:
    """Decode and classify raw text values (str, bytes, None or anything else, `decoded_texts`); every row needs an
    id."""
    check_ids(ids, name, first_row)
    texts, issues = decoded_texts(values)
    return Block(ids=ids, texts=texts, issues=issues)


def string_block(ids: pa.Array, column: pa.Array, name: str, first_row: int = 0) -> Block:
    """`make_block` for a column of Arrow strings (`string_texts`: array operations)."""
    check_ids(ids, name, first_row)
    texts, issues = string_texts(column)
    return Block(ids=ids, texts=texts, issues=issues, strings=column)


def check_ids(ids: pa.Array, name: str, first_row: int) -> None:
    """Every row needs an id: the first without one is a `UserError` naming it."""
    if ids.null_count:
        row = first_row + next(index for index, valid in enumerate(ids.is_valid().to_pylist()) if not valid)
        raise UserError(
            f"dataset {name} row {row} has no id (infer.id_column); give every row an id, "
            "so that predictions can be joined back to their rows"
        )


def empty_dataset(name: str, param: str = "infer.input") -> UserError:
    """The error for a dataset with no rows, wherever it is found out."""
    return UserError(f"dataset {name} has no rows ({param}); point {param} at a dataset with rows")


def row_count(name: str) -> int | None:
    """Rows in the dataset if known without reading it (Parquet metadata), else None."""
    files = dataset_files(name)
    if files[0][0].suffix != ".parquet":
        return None
    rows = 0
    for source, _ in files:
        try:
            rows += pq.ParquetFile(source.filesystem.open_input_file(source.path)).metadata.num_rows
        except (pa.ArrowException, OSError) as error:
            raise unreadable(source, error) from None
    return rows
