"""The rule that labels the demo's tokens, so the demo model's predictions can be checked.

A token's label depends only on its own characters (the tokenizer's piece, word-boundary marker
removed): digits make it NUMBER, CJK characters make it CJK, an uppercase first letter makes it
CAPITALIZED, anything else is O.
"""

from __future__ import annotations

DEMO_LABELS: tuple[str, ...] = ("O", "NUMBER", "CAPITALIZED", "CJK")
WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁"

_CJK_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
)


def is_cjk(char: str) -> bool:
    """True for Han, Kana and Hangul characters."""
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def rule_label(piece: str) -> str:
    """The demo label of one token piece (the `infer.reference` hook of the demo)."""
    text = piece.replace(WORD_BOUNDARY, "")
    if any(char.isdigit() for char in text):
        return "NUMBER"
    if any(is_cjk(char) for char in text):
        return "CJK"
    letters = [char for char in text if char.isalpha()]
    if letters and letters[0].isupper():
        return "CAPITALIZED"
    return "O"
