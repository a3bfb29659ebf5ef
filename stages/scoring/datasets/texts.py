"""What is wrong with a dataset's texts: each raw value decoded into a text safe to tokenise, and its first
problem named (one of `TEXT_ISSUES`), row by row for values of any type (`decoded_texts`) or with array operations
for a column of Arrow strings (`string_texts`, the common case); both give the same texts and issues."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TEXT_ISSUES = ("null", "not_string", "invalid_utf8", "empty", "whitespace", "control_chars")
# Unicode's control characters (category Cc: U+0000-U+001F, U+007F-U+009F) but tab, line feed and carriage return
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # escapes that RE2 (Arrow) reads alike
# The characters `str.isspace` counts as spaces, at the start of a text: only such texts can be nothing but spaces
LEADING_SPACE = r"^[\t-\r\x1c-\x20\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"

Texts = tuple[list[str], list[str | None]]  # each row's text, and its first problem or None


def text_issue(text: str) -> str | None:
    """The problem of a decoded text, if any: empty, whitespace-only, or control characters."""
    if not text:
        return "empty"
    if text.isspace():
        return "whitespace"
    if CONTROL_CHARACTER.search(text):
        return "control_chars"
    return None


def decoded_texts(values: list) -> Texts:
    """Raw values (str, bytes, None or anything else) decoded and classified: a null or non-string value becomes ""
    and bytes that are not UTF-8 are decoded with U+FFFD replacement characters."""
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
    return texts, issues


def string_texts(column: pa.Array) -> Texts:
    """`decoded_texts` for a column of Arrow strings (valid UTF-8), checked with array operations: only the texts that
    start with a space are looked at one by one (whether they are nothing but spaces)."""
    texts = column.to_pylist()
    if column.null_count:
        texts = ["" if text is None else text for text in texts]
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
    return texts, issues


def is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def control_character_rows(texts: list[str]) -> list[int]:
    """The rows whose text has a control character, found in one pass over the texts joined by line feeds."""
    ends = np.cumsum([len(text) + 1 for text in texts])
    found = [match.start() for match in CONTROL_CHARACTER.finditer("\n".join(texts))]
    return sorted(set(np.searchsorted(ends, found, side="right").tolist()))
