"""Scoring a block of texts with an onnxruntime session: the core that every engine runs.

`score_texts` takes ids and texts and returns an Arrow table in the predictions schema, in input
order. Windows are batched longest first (sorted inside the block) under a row and a token budget.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from stages.dataset import Chunk
from stages.demo_rules import rule_label
from stages.encoding import (
    EncodedText,
    Framing,
    Window,
    encode_texts,
    make_windows,
    most_central_window,
    pad_batch,
    plan_batches,
)
from stages.errors import UserError
from stages.params import InferParams, RuntimeParams
from stages.runtime import ONNX_FILE, SIDECAR_FILE, create_session, onnx_logits
from stages.spans import aggregate_spans

SPAN_TYPE = pa.struct(
    [("label", pa.string()), ("start", pa.int32()), ("end", pa.int32()), ("text", pa.string()), ("score", pa.float32())]
)


@dataclass(frozen=True)
class ServedModel:
    """An exported model ready to score: session, tokenizer, labels and window framing."""

    session: ort.InferenceSession
    tokenizer: PreTrainedTokenizerBase
    labels: tuple[str, ...]
    framing: Framing

    @classmethod
    def load(cls, onnx_dir: Path, runtime: RuntimeParams) -> ServedModel:
        sidecar = onnx_dir / SIDECAR_FILE
        if not sidecar.is_file():
            raise UserError(f"{sidecar} not found (export.output); run the export stage first")
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
        tokenizer = AutoTokenizer.from_pretrained(onnx_dir, local_files_only=True)
        return cls(
            session=create_session(onnx_dir / ONNX_FILE, runtime),
            tokenizer=tokenizer,
            labels=tuple(metadata["labels"]),
            framing=Framing.of(tokenizer, int(metadata["max_length"])),
        )


@dataclass
class Tally:
    """Totals over scored blocks, for `metrics/infer.json`; blocks' tallies add up."""

    rows: int = 0
    skipped: int = 0
    tokens: int = 0
    token_slots: int = 0
    windows: int = 0
    truncated_rows: int = 0
    model_seconds: float = 0.0
    reference_correct: int = 0
    reference_total: int = 0
    text_issues: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)

    def add(self, other: Tally) -> None:
        for name, value in vars(other).items():
            if isinstance(value, dict):
                merged = Counter(getattr(self, name))
                merged.update(value)
                setattr(self, name, dict(sorted(merged.items())))
            else:
                setattr(self, name, getattr(self, name) + value)


def output_schema(id_type: pa.DataType, probabilities: bool) -> pa.Schema:
    """The predictions file: one row per input row; per-token lists aligned with each other."""
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
    if probabilities:
        fields.append(("probabilities", pa.list_(pa.list_(pa.float32()))))
    return pa.schema(fields)


@dataclass(frozen=True)
class RowPrediction:
    """One row's results for the content tokens its windows cover."""

    positions: np.ndarray  # int64 [n], indices into the row's content tokens
    label_ids: np.ndarray  # int16 [n]
    probabilities: np.ndarray  # float32 [n, labels]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class PreparedBlock:
    """A block of rows tokenised and cut into windows, ready for the model."""

    chunk: Chunk
    texts: list[str]  # what is scored: "" for skipped rows
    skipped: list[bool]
    encoded: list[EncodedText]
    windows: list[Window]


def prepare_block(served: ServedModel, chunk: Chunk, params: InferParams) -> PreparedBlock:
    """Apply the bad-row policy, tokenise, and cut windows (the CPU work that can run ahead of the model)."""
    skipped = [params.bad_rows == "skip" and issue is not None for issue in chunk.issues]
    texts = ["" if skip else text for text, skip in zip(chunk.texts, skipped, strict=True)]
    encoded = encode_texts(served.tokenizer, texts)
    windows = make_windows(encoded, served.framing, params.long_text, params.stride)
    return PreparedBlock(chunk, texts, skipped, encoded, windows)


def predict_rows(served: ServedModel, block: PreparedBlock, params: InferParams, tally: Tally) -> list[RowPrediction]:
    """Run every window through the model, longest first in budgeted batches, and merge windows back into rows."""
    windows = block.windows
    window_probabilities: list[np.ndarray] = [np.empty((0, len(served.labels)), np.float32)] * len(windows)
    prefix = len(served.framing.prefix)
    started = time.perf_counter()
    for indices in plan_batches([len(window) for window in windows], params.batch_size, params.max_batch_tokens):
        arrays = pad_batch([windows[index] for index in indices], served.tokenizer.pad_token_id)
        probabilities = softmax(onnx_logits(served.session, arrays))
        tally.token_slots += arrays["attention_mask"].size
        for position, index in enumerate(indices):
            window_probabilities[index] = probabilities[position, prefix : prefix + windows[index].length]
    tally.model_seconds += time.perf_counter() - started
    tally.windows += len(windows)
    return merge_windows(block.encoded, windows, window_probabilities)


def merge_windows(
    encoded: list[EncodedText], windows: list[Window], window_probabilities: list[np.ndarray]
) -> list[RowPrediction]:
    """Each token's prediction from the window where it is most central; tokens no window covers are dropped."""
    by_row: dict[int, list[int]] = {}
    for index, window in enumerate(windows):
        by_row.setdefault(window.row, []).append(index)
    predictions = []
    for row, text in enumerate(encoded):
        members = by_row[row]
        choice = most_central_window(len(text), [windows[index] for index in members])
        covered = np.flatnonzero(choice >= 0)
        probabilities = np.empty((len(covered), window_probabilities[members[0]].shape[-1]), dtype=np.float32)
        for local, index in enumerate(members):
            tokens = covered[choice[covered] == local]
            probabilities[np.searchsorted(covered, tokens)] = window_probabilities[index][tokens - windows[index].start]
        predictions.append(
            RowPrediction(
                positions=covered, label_ids=probabilities.argmax(axis=-1).astype(np.int16), probabilities=probabilities
            )
        )
    return predictions


def score_block(served: ServedModel, block: PreparedBlock, params: InferParams) -> tuple[pa.Table, Tally]:
    """Score a prepared block; returns its predictions table (input order) and its tally."""
    chunk, encoded = block.chunk, block.encoded
    tally = Tally(rows=len(chunk.texts), skipped=sum(block.skipped))
    tally.text_issues = dict(Counter(issue for issue in chunk.issues if issue is not None))
    predictions = predict_rows(served, block, params, tally)
    names = np.asarray(served.labels, dtype=object)
    ignore = frozenset(params.span_ignore_labels)
    columns: dict[str, list] = {name: [] for name in output_schema(chunk.ids.type, params.probabilities).names}
    columns["id"] = chunk.ids
    rows = zip(block.texts, chunk.issues, block.skipped, predictions, encoded, strict=True)
    for text, issue, skipped, prediction, tokens in rows:
        labels = names[prediction.label_ids].tolist()
        offsets = tokens.offsets[prediction.positions]
        starts, ends = offsets[:, 0].tolist(), offsets[:, 1].tolist()
        truncated = len(prediction.positions) < len(tokens)
        columns["n_tokens"].append(len(labels))
        columns["truncated"].append(truncated)
        columns["skipped_reason"].append(issue if skipped else None)
        columns["label_ids"].append(prediction.label_ids.tolist())
        columns["labels"].append(labels)
        columns["starts"].append(starts)
        columns["ends"].append(ends)
        token_scores = prediction.probabilities.max(axis=-1) if len(labels) else np.empty(0, np.float32)
        columns["spans"].append(aggregate_spans(text, labels, starts, ends, token_scores, ignore))
        if params.probabilities:
            columns["probabilities"].append(prediction.probabilities.tolist())
        tally.tokens += len(labels)
        tally.truncated_rows += truncated
        for name, count in Counter(labels).items():
            tally.label_counts[name] = tally.label_counts.get(name, 0) + count
    if params.reference == "demo_rules":
        add_reference_accuracy(served, encoded, predictions, tally)
    table = pa.Table.from_pydict(columns, schema=output_schema(chunk.ids.type, params.probabilities))
    return table, tally


def score_texts(served: ServedModel, chunk: Chunk, params: InferParams) -> tuple[pa.Table, Tally]:
    """Prepare and score a block of rows in one call (for engines that do not pipeline)."""
    return score_block(served, prepare_block(served, chunk, params), params)


def add_reference_accuracy(
    served: ServedModel, encoded: list[EncodedText], predictions: list[RowPrediction], tally: Tally
) -> None:
    """Compare predictions with the demo's rule labels of the same tokens."""
    for tokens, prediction in zip(encoded, predictions, strict=True):
        pieces = served.tokenizer.convert_ids_to_tokens(tokens.input_ids[prediction.positions].tolist())
        expected = np.fromiter((rule_label(piece) for piece in pieces), dtype=np.int16, count=len(pieces))
        tally.reference_correct += int(np.count_nonzero(expected == prediction.label_ids))
        tally.reference_total += len(pieces)
