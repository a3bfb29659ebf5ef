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
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stages.core.errors import UserError
from stages.core.params import AnnotationParams
from stages.scoring.datasets.annotations import gold_columns, row_spans, tag_spans
from stages.scoring.datasets.readers import READERS, Columns, column_names
from stages.scoring.quality import Span
from stages.scoring.storage.locations import Location, locate, storage_error

FORMATS = tuple(READERS)

TEXT_ISSUES = ("null", "not_string", "invalid_utf8", "empty", "whitespace", "control_chars")
# Unicode's control characters (category Cc: U+0000-U+001F, U+007F-U+009F) but tab, line feed and carriage return
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # escapes that RE2 (Arrow) reads alike
# The characters `str.isspace` counts as spaces, at the start of a text: only such texts can be nothing but spaces
LEADING_SPACE = r"^[\t-\r\x1c-\x20\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"


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
    gold: list[list[Span]] | None = None  # each row's gold spans, where the dataset has annotations
    keys: list[bytes] | None = None  # each row's key (`stages.scoring.reuse.keys.row_keys`), once computed


def text_issue(text: str) -> str | None:
    """The problem of a decoded text, if any: empty, whitespace-only, or control characters."""
    if not text:
        return "empty"
    if text.isspace():
        return "whitespace"
    if CONTROL_CHARACTER.search(text):
        return "control_chars"
    return None


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
            if id_type is not None and block.ids.type != id_type:
                raise UserError(
                    f"dataset {source.name} has ids of type {block.ids.type} where the files before it have {id_type} "
                    f"({id_column!r}); write every file of {name} with one id type"
                )
            id_type = block.ids.type
            yield block


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
            text = table.column(columns.text).combine_chunks() if columns.text else None
            if columns.gold_format == "none" and text is not None and is_string(text.type):
                yield string_block(ids, text, source.name, first_row)
            else:
                values = {column: table.column(column).to_pylist() for column in columns.names[1:]}
                if source.suffix == ".jsonl":
                    values = {column: [json.loads(value) for value in cells] for column, cells in values.items()}
                yield annotated_block(ids, values, columns, annotations, source.name, first_row)
            first_row += table.num_rows
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
        raise unreadable(source, error) from None


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
    block = make_block(ids, [text for text, _ in built], name, first_row)
    return dataclasses.replace(block, gold=[spans for _, spans in built])


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
    """Decode and classify raw text values (str, bytes, None or anything else); every row needs an id."""
    check_ids(ids, name, first_row)
    texts: list[str] = []
    issues: list[str | None] = []
    for value in values:
        if isinstance(value, str):
            text, issue = value, None if value and not value.isspace() else text_issue(value)
        elif value is None:
            text, issue = "", "null"
        elif isinstance(value, bytes):
            text = value.decode("utf-8", errors="replace")
            issue = "invalid_utf8" if text != value.decode("utf-8", errors="ignore") else text_issue(text)
        else:
            text, issue = "", "not_string"
        texts.append(text)
        issues.append(issue)
    for row in control_character_rows(texts):
        issues[row] = issues[row] or "control_chars"
    return Block(ids=ids, texts=texts, issues=issues)


def string_block(ids: pa.Array, column: pa.Array, name: str, first_row: int = 0) -> Block:
    """`make_block` for a column of Arrow strings (valid UTF-8), checked with array operations: only the texts that
    start with a space are looked at one by one (whether they are nothing but spaces)."""
    check_ids(ids, name, first_row)
    texts = column.fill_null("").to_pylist()
    issues: list[str | None] = [None] * len(texts)
    spaced = np.flatnonzero(pc.match_substring_regex(column, LEADING_SPACE).fill_null(False).to_numpy(False))
    rows_of = {  # from the lowest precedence to the highest: a row gets the first issue `text_issue` finds
        "control_chars": np.flatnonzero(pc.match_substring_regex(column, CONTROL_CHARACTER.pattern).fill_null(False)),
        "whitespace": [row for row in spaced.tolist() if texts[row].isspace()],
        "empty": np.flatnonzero(pc.equal(pc.binary_length(column), 0).fill_null(False)),
        "null": np.flatnonzero(column.is_null()),
    }
    for issue, rows in rows_of.items():
        for row in np.asarray(rows, dtype=np.int64).tolist():
            issues[row] = issue
    return Block(ids=ids, texts=texts, issues=issues)


def is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def check_ids(ids: pa.Array, name: str, first_row: int) -> None:
    """Every row needs an id: the first without one is a `UserError` naming it."""
    if ids.null_count:
        row = first_row + next(index for index, valid in enumerate(ids.is_valid().to_pylist()) if not valid)
        raise UserError(
            f"dataset {name} row {row} has no id (infer.id_column); give every row an id, "
            "so that predictions can be joined back to their rows"
        )


def control_character_rows(texts: list[str]) -> list[int]:
    """The rows whose text has a control character, found in one pass over the texts joined by line feeds."""
    ends = np.cumsum([len(text) + 1 for text in texts])
    found = [match.start() for match in CONTROL_CHARACTER.finditer("\n".join(texts))]
    return sorted(set(np.searchsorted(ends, found, side="right").tolist()))


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
