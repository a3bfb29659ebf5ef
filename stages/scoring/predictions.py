"""The predictions' schema: one row per input row, per-token lists aligned with each other, the spans and, under a
word-level `infer.aggregation`, per-word lists aligned with each other."""

from __future__ import annotations

import pyarrow as pa

SPAN_TYPE = pa.struct(
    [("label", pa.string()), ("start", pa.int32()), ("end", pa.int32()), ("text", pa.string()), ("score", pa.float32())]
)


def output_schema(id_type: pa.DataType, probabilities: bool, words: bool) -> pa.Schema:
    """One row per input row; per-token lists aligned with each other; with `words`, per-word ones."""
    fields = [
        ("id", id_type),
        ("n_tokens", pa.int32()),
        ("truncated", pa.bool_()),
        ("skipped_reason", pa.string()),
        ("label_ids", pa.list_(pa.int16())),
        ("labels", pa.list_(pa.string())),
        ("starts", pa.list_(pa.int32())),
        ("ends", pa.list_(pa.int32())),
        ("spans", pa.list_(SPAN_TYPE)),
    ]
    if words:
        fields += [
            ("word_starts", pa.list_(pa.int32())),
            ("word_ends", pa.list_(pa.int32())),
            ("word_labels", pa.list_(pa.string())),
        ]
    if probabilities:
        fields.append(("probabilities", pa.list_(pa.list_(pa.float32()))))
    return pa.schema(fields)
