"""The demo dataset: synthetic multilingual rows with a long-tailed length distribution and the awkward
cases a scorer must survive (empty, null, whitespace-only, control characters, rows far beyond 512 tokens)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tools.demo.lexicon import (
    ARABIC,
    ARABIC_DIGITS,
    CHINESE,
    CONTROL_CHARS,
    EMOJI,
    JAPANESE,
    JAPANESE_PARTICLES,
    KOREAN,
    LANGUAGE_WEIGHTS,
    LATIN,
    SENTENCE_END,
)
from tools.demo.rules import entity_spans

SEED = 20240517
NUM_ROWS = 6400
NUM_EMPTY = 6
NUM_NULL = 6
NUM_WHITESPACE = 6
NUM_CONTROL = 40
NUM_LONG = 32
LONG_WORDS = (1250, 2700)  # words per long row: roughly 1,500-4,000 tokens
MEDIAN_WORDS = 25.0  # roughly 40 tokens
LENGTH_SIGMA = 0.75
MIXED_SENTENCE_RATE = 0.12


def make_number(rng: random.Random) -> str:
    """An integer, decimal, date, time, percentage or amount, in one of several local formats."""
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randrange(0, 100))
    if kind == 1:
        return f"{rng.randrange(1000, 1_000_000):,}"
    if kind == 2:
        return f"{rng.uniform(0, 1000):.{rng.randint(1, 3)}f}"
    if kind == 3:
        return f"{rng.randrange(1990, 2031)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 4:
        return f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randrange(1990, 2031)}"
    if kind == 5:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    if kind == 6:
        return f"{rng.randrange(0, 100)}%"
    if kind == 7:
        return f"{rng.choice('$€£')}{rng.randrange(1, 10000)}.{rng.randrange(0, 100):02d}"
    return f"{rng.randrange(1, 999)},{rng.randrange(0, 100)}"


def latin_sentence(rng: random.Random, lexicon: dict[str, tuple[str, ...]]) -> str:
    """A Latin or Cyrillic sentence: capitalised start, names, places, numbers and punctuation."""
    tokens = []
    for _ in range(max(3, int(rng.lognormvariate(2.0, 0.4)))):
        draw = rng.random()
        if draw < 0.38:
            tokens.append(rng.choice(lexicon["function"]))
        elif draw < 0.72:
            tokens.append(rng.choice(lexicon["content"]))
        elif draw < 0.82:
            tokens.append(rng.choice(lexicon["names"]))
        elif draw < 0.90:
            tokens.append(rng.choice(lexicon["places"]))
        elif draw < 0.97:
            tokens.append(make_number(rng))
        else:
            tokens.append(rng.choice(EMOJI))
    for index in range(len(tokens) - 1):
        if rng.random() < 0.08:
            tokens[index] += ","
    tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
    if rng.random() < 0.05:
        tokens[0] = f"({tokens[0]}"
        tokens[-1] += ")"
    if rng.random() < 0.06:
        tokens = ["«", *tokens, "»"] if rng.random() < 0.5 else ['"' + tokens[0], *tokens[1:-1], tokens[-1] + '"']
    return " ".join(tokens) + rng.choice(SENTENCE_END["latin"])


def spanish_sentence(rng: random.Random) -> str:
    """A Spanish sentence, sometimes wrapped in inverted question or exclamation marks."""
    sentence = latin_sentence(rng, LATIN["es"]).rstrip()
    if rng.random() < 0.2:
        opening, closing = rng.choice((("¿", "?"), ("¡", "!")))
        sentence = opening + sentence[:-1] + closing
    return sentence + " "


def arabic_sentence(rng: random.Random) -> str:
    """An Arabic sentence, numbers sometimes in Arabic-Indic digits."""
    tokens = []
    for _ in range(max(3, int(rng.lognormvariate(2.0, 0.4)))):
        draw = rng.random()
        if draw < 0.3:
            tokens.append(rng.choice(ARABIC["function"]))
        elif draw < 0.8:
            tokens.append(rng.choice(ARABIC["content"]))
        elif draw < 0.93:
            tokens.append(rng.choice(ARABIC["names"]))
        else:
            number = make_number(rng)
            tokens.append(number.translate(ARABIC_DIGITS) if rng.random() < 0.5 else number)
    return " ".join(tokens) + rng.choice(SENTENCE_END["ar"])


def cjk_sentence(rng: random.Random, language: str) -> str:
    """A Chinese or Japanese sentence (no spaces) or a Korean one (spaces between words)."""
    count = max(3, int(rng.lognormvariate(1.9, 0.4)))
    if language == "ko":
        tokens = [make_number(rng) if rng.random() < 0.08 else rng.choice(KOREAN) for _ in range(count)]
        return " ".join(tokens) + rng.choice((". ", "? ", "! "))
    vocabulary = CHINESE if language == "zh" else JAPANESE
    pieces = []
    for _ in range(count):
        pieces.append(make_number(rng) if rng.random() < 0.07 else rng.choice(vocabulary))
        if language == "ja" and rng.random() < 0.5:
            pieces.append(rng.choice(JAPANESE_PARTICLES))
        if rng.random() < 0.1:
            pieces.append("，" if language == "zh" else "、")
    return "".join(pieces) + rng.choice(SENTENCE_END["cjk"])


def mixed_sentence(rng: random.Random) -> str:
    """A code-switched sentence mixing scripts word by word (English frame, foreign names)."""
    en = LATIN["en"]
    tokens = [rng.choice(en["names"]), rng.choice(en["content"])]
    for _ in range(rng.randint(3, 9)):
        source = rng.choice(("en", "ru", "zh", "ja", "ko", "ar", "number", "emoji", "fr", "de"))
        if source in LATIN:
            tokens.append(rng.choice(LATIN[source]["names"] + LATIN[source]["content"]))
        elif source == "zh":
            tokens.append(rng.choice(CHINESE))
        elif source == "ja":
            tokens.append(rng.choice(JAPANESE))
        elif source == "ko":
            tokens.append(rng.choice(KOREAN))
        elif source == "ar":
            tokens.append(rng.choice(ARABIC["content"]))
        elif source == "number":
            tokens.append(make_number(rng))
        else:
            tokens.append(rng.choice(EMOJI))
    return " ".join(tokens) + ". "


def make_sentence(rng: random.Random, language: str) -> str:
    """One sentence in `language`, or occasionally a code-switched one."""
    if language == "mixed" or rng.random() < MIXED_SENTENCE_RATE:
        return mixed_sentence(rng)
    if language == "es":
        return spanish_sentence(rng)
    if language in LATIN:
        return latin_sentence(rng, LATIN[language])
    if language == "ar":
        return arabic_sentence(rng)
    return cjk_sentence(rng, language)


def make_text(rng: random.Random, language: str, target_words: int) -> str:
    """Sentences in one language up to about `target_words` words (unspaced Chinese/Japanese: 3 characters a word)."""
    parts: list[str] = []
    total = 0
    while total < target_words:
        sentence = make_sentence(rng, language)
        parts.append(sentence)
        total += len(sentence.split()) if language not in ("zh", "ja") else len(sentence) // 3
        if rng.random() < 0.03:
            parts.append("\n")
    return "".join(parts).strip()


def add_control_chars(rng: random.Random, text: str) -> str:
    """Insert a few control, zero-width or bidirectional-mark characters at random positions."""
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        chars.insert(rng.randrange(len(chars) + 1), rng.choice(CONTROL_CHARS))
    return "".join(chars)


def make_texts(seed: int = SEED) -> list[str | None]:
    """The demo dataset's texts, in a seeded shuffled order, edge cases included."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    languages = list(LANGUAGE_WEIGHTS)
    weights = list(LANGUAGE_WEIGHTS.values())
    num_regular = NUM_ROWS - NUM_EMPTY - NUM_NULL - NUM_WHITESPACE - NUM_LONG
    lengths = np.maximum(1, np_rng.lognormal(math.log(MEDIAN_WORDS), LENGTH_SIGMA, num_regular).astype(int))
    regular = [make_text(rng, rng.choices(languages, weights)[0], int(n)) for n in lengths]
    for index in rng.sample(range(len(regular)), NUM_CONTROL):
        regular[index] = add_control_chars(rng, regular[index])
    long_texts = [make_text(rng, rng.choices(languages, weights)[0], rng.randint(*LONG_WORDS)) for _ in range(NUM_LONG)]
    blank = [rng.choice((" ", "   ", "\t", "\n", " \n\t ", "\u3000")) for _ in range(NUM_WHITESPACE)]
    texts: list[str | None] = [*regular, *long_texts, *blank, *[""] * NUM_EMPTY, *[None] * NUM_NULL]
    rng.shuffle(texts)
    return texts


SPANS_TYPE = pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32()), ("label", pa.string())]))


def write_dataset(texts: list[str | None], path: Path) -> None:
    """Write `id`, `text` (nullable string) and `entities` (the demo rule's gold spans) as zstd-compressed Parquet."""
    table = pa.table(
        {
            "id": [f"row-{index:06d}" for index in range(len(texts))],
            "text": texts,
            "entities": [entity_spans(text or "") for text in texts],
        },
        schema=pa.schema(
            [
                pa.field("id", pa.string(), nullable=False),
                pa.field("text", pa.string()),
                pa.field("entities", SPANS_TYPE),
            ]
        ),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", compression_level=19)
