"""The `annotations` section of `params.yaml`: where a dataset's gold labels are and how to read them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class AnnotationParams:
    """Gold labels in a dataset (`parity.input`, `infer.input`), for entity precision, recall and F1 (docs/quality.md)."""

    format: Literal["auto", "spans", "tags", "none"] = "auto"
    """`spans` (a list of `{start, end, label}` per row in `spans_column`), `tags` (words and a tag per word in
    `words_column` and `tags_column`; `.conll` files always), `none`, or `auto`: spans where the dataset has
    `spans_column`, else tags where it has both tag columns, else none."""
    spans_column: str = "entities"
    """Character spans per row: `{start, end, label}` (Label Studio's `labels: [one]` too) or `[start, end, label]`."""
    words_column: str = "tokens"
    """Each row's words (`tokens`), found in the text in order, or joined by spaces where there is no text column."""
    tags_column: str = "ner_tags"
    """The column of each word's tag (Hugging Face datasets: `ner_tags`): names, or ids named by `tag_names`."""
    scheme: Literal["iob2", "iob1", "io"] = "iob2"
    """`iob2` (BIO: an entity starts with `B-`), `iob1` (`B-` only between two of one type), `io` (plain labels)."""
    tag_names: tuple[str, ...] | None = None
    """The name of each tag id for integer tags (a Hugging Face `ClassLabel`'s `names`)."""
