"""The rule that annotates the demo's texts, as an annotator would: character spans, labels that depend on context.

Characters are labelled, not tokens: a number is NUMBER with its inner separators and signs (`1,234.5`, `$12.50`,
`2024-05-17`, `45%`), a word whose first letter is uppercase is CAPITALIZED to its end, and a run of Han, Kana or
Hangul characters is CJK. Adjacent spans of one label that only whitespace separates are one span (`Émile Zola`),
as a model with plain labels reads them. So a token's label depends on its neighbours: the `,` of `1,234` is a
NUMBER where the `,` after a word is not, and a lowercase piece inside `Moscow` is CAPITALIZED. A model trained on
these spans is confident on text and unsure on random token ids, as fine-tuned encoders are.
"""

from __future__ import annotations

import re

DEMO_LABELS: tuple[str, ...] = ("O", "NUMBER", "CAPITALIZED", "CJK")

CJK_CHARACTERS = (
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"  # Kana, Han (A, unified, compat.), Hangul
)
NUMBER = re.compile(r"[$€£]?\d+(?:[.,:/\-]\d+)*%?")
CJK_RUN = re.compile(f"[{CJK_CHARACTERS}]+")
WORD = re.compile(rf"[^\W\d_{CJK_CHARACTERS}]+")  # letters and marks, not digits or CJK


def character_labels(text: str) -> list[str | None]:
    """Each character's label, None for O; numbers first, then CJK runs, then capitalised words."""
    labels: list[str | None] = [None] * len(text)
    for pattern, label in ((NUMBER, "NUMBER"), (CJK_RUN, "CJK")):
        for match in pattern.finditer(text):
            labels[match.start() : match.end()] = [labels[index] or label for index in range(*match.span())]
    for match in WORD.finditer(text):
        if match.group()[0].isupper():
            labels[match.start() : match.end()] = [labels[index] or "CAPITALIZED" for index in range(*match.span())]
    return labels


def entity_spans(text: str) -> list[dict]:
    """The text's gold spans, `{start, end, label}` (end exclusive), runs of one label merged across whitespace."""
    labels = character_labels(text)
    spans: list[dict] = []
    index = 0
    while index < len(text):
        label = labels[index]
        end = index + 1
        while end < len(text) and labels[end] == label:
            end += 1
        if label is not None:
            if spans and spans[-1]["label"] == label and not text[spans[-1]["end"] : index].strip():
                spans[-1]["end"] = end
            else:
                spans.append({"start": index, "end": end, "label": label})
        index = end
    return spans
