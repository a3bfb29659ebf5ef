"""Real multilingual text for the tests: human translations from the GNOME libraries' message catalogs.

    python -m tools.generate.real_text     # rewrite tests/data/real_text.parquet from this machine's /usr/share/locale

The catalogs (`glib20`, `gtk20`, `gtk20-properties`, `gdk-pixbuf`, `at-spi2-core`; LGPL-2.1+, shipped by
Debian's libglib2.0-data, libgtk2.0-common, libgdk-pixbuf2.0-common and at-spi2-common) hold the same
messages written by people in about a hundred languages and scripts: Latin, Cyrillic, Greek, Arabic, Hebrew,
Devanagari, Bengali, Tamil, Thai, Georgian, Armenian, Ethiopic, Han, Kana and Hangul, with the punctuation
each writing system uses (fullwidth forms, guillemets, RTL marks). Rows are single messages, and a few are
paragraphs of one language's messages joined together, so that some run past 512 tokens. The file is committed
(`tests/data/real_text.parquet`), so the tests do not depend on what a machine has installed.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tools.cli import NoSettings, parse

LOCALE = Path("/usr/share/locale")
CATALOGS = ("glib20", "gtk20", "gtk20-properties", "gdk-pixbuf", "at-spi2-core")
REAL_TEXT = Path(__file__).resolve().parents[2] / "tests" / "data" / "real_text.parquet"
ROWS = 2000
LONG_ROWS = 40  # paragraphs of MESSAGES_PER_LONG_ROW messages of one language
MESSAGES_PER_LONG_ROW = 120


def catalog_messages(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a GNU .mo file (UTF-8), plural forms' first string each; the header skipped."""
    data = path.read_bytes()
    order = "<" if data[:4] == b"\xde\x12\x04\x95" else ">"
    count, originals, translated = struct.unpack(order + "3I", data[8:20])

    def string(table: int, index: int) -> str:
        length, offset = struct.unpack(order + "2I", data[table + 8 * index : table + 8 * index + 8])
        return data[offset : offset + length].decode("utf-8", errors="replace").split("\0")[0]

    pairs = [(string(originals, index), string(translated, index)) for index in range(count)]
    return [(msgid.rpartition("\x04")[2], msgstr) for msgid, msgstr in pairs if msgid]


def translations() -> dict[str, list[str]]:
    """Each language's translated messages (msgstr, non-empty and unlike the English msgid), in catalog order."""
    found: dict[str, list[str]] = {}
    for path in sorted(LOCALE.glob("*/LC_MESSAGES/*.mo")):
        if path.stem in CATALOGS:
            for msgid, msgstr in catalog_messages(path):
                if msgstr.strip() and msgstr != msgid:
                    found.setdefault(path.parts[-3], []).append(msgstr)
    return found


def stable_order(texts: list[str]) -> list[str]:
    """The texts in an order fixed by their content, not by the catalogs' hash order."""
    return sorted(set(texts), key=lambda text: hashlib.sha256(text.encode()).hexdigest())


def build_rows() -> list[tuple[str, str]]:
    """(language, text): ROWS single messages spread over every language, then LONG_ROWS paragraphs."""
    by_language = {language: stable_order(texts) for language, texts in sorted(translations().items())}
    rows: list[tuple[str, str]] = []
    depth = 0
    while len(rows) < ROWS - LONG_ROWS:
        for language, texts in by_language.items():
            if depth < len(texts) and len(rows) < ROWS - LONG_ROWS:
                rows.append((language, texts[depth]))
        depth += 1
    languages = sorted(by_language, key=lambda language: -len(by_language[language]))[:LONG_ROWS]
    for language in languages:
        rows.append((language, " ".join(by_language[language][-MESSAGES_PER_LONG_ROW:])))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parse(NoSettings, argv, __doc__)
    rows = build_rows()
    table = pa.table(
        {
            "id": [f"real-{index:04d}" for index in range(len(rows))],
            "lang": [language for language, _ in rows],
            "text": [text for _, text in rows],
        }
    )
    REAL_TEXT.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, REAL_TEXT, compression="zstd")
    print(f"wrote {REAL_TEXT}: {table.num_rows} rows, {len(set(table.column('lang').to_pylist()))} languages")


if __name__ == "__main__":
    main()
