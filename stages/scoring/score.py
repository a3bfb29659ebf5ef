"""Scoring a block of rows with an exported model: the core that every engine runs.

`score_rows` takes a block of ids and texts and returns an Arrow table in the predictions schema, in
input order, and its tally. Windows are batched longest first (sorted inside the block) under a row
and a token budget; each token's prediction comes from the window where it is most central.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from stages.core.errors import UserError
from stages.core.params import InferParams
from stages.graph.session import onnx_logits
from stages.scoring.batching import pad_batch, plan_batches
from stages.scoring.datasets.annotations import gold_for_model
from stages.scoring.datasets.blocks import Block
from stages.scoring.metrics import Tally
from stages.scoring.predictions import output_schema
from stages.scoring.quality import gold_token_types, predicted_spans, scored_gold, token_types
from stages.scoring.served import ServedModel
from stages.scoring.spans import aggregate_spans
from stages.scoring.tokens import EncodedText
from stages.scoring.windows import Window, make_windows, most_central_window


@dataclass(frozen=True)
class RowPrediction:
    """One row's results for the content tokens its windows cover."""

    positions: np.ndarray  # int64 [n], indices into the row's content tokens
    label_ids: np.ndarray  # int16 [n]
    probabilities: np.ndarray  # float32 [n, labels]


@dataclass(frozen=True)
class PreparedBlock:
    """A block of rows tokenised and cut into windows, ready for the model."""

    block: Block
    texts: list[str]  # what is scored: "" for skipped rows
    skipped: list[bool]
    encoded: list[EncodedText]
    windows: list[Window]


class BlockFailed(RuntimeError):
    """Scoring a block raised an error that is not the user's to fix (a bug, here or in a hook): names the block."""


@contextmanager
def naming_block(index: int, block: Block) -> Iterator[None]:
    """Errors raised while block `index` is scored name it and its first row id; a `UserError` stays one."""
    try:
        yield
    except UserError as error:
        raise UserError(f"block {index} (first row id {block.ids[0].as_py()!r}): {error}") from None
    except Exception as error:
        where = f"block {index} (first row id {block.ids[0].as_py()!r})"
        raise BlockFailed(f"scoring {where} failed: {type(error).__name__}: {error}") from error


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def prepare_block(served: ServedModel, block: Block, params: InferParams) -> PreparedBlock:
    """Apply the bad-row policy, tokenise, and cut windows (the CPU work that can run ahead of the model)."""
    skipped = [params.bad_rows == "skip" and issue is not None for issue in block.issues]
    texts = ["" if skip else text for text, skip in zip(block.texts, skipped, strict=True)]
    encoded = served.tokenizer.encode(texts)
    windows = make_windows(encoded, served.framing, params.long_text, params.stride)
    return PreparedBlock(block, texts, skipped, encoded, windows)


def predict_rows(served: ServedModel, block: PreparedBlock, params: InferParams, tally: Tally) -> list[RowPrediction]:
    """Run every window through the model, longest first in budgeted batches, and merge windows back into rows."""
    windows = block.windows
    window_probabilities: list[np.ndarray] = [np.empty((0, len(served.labels)), np.float32)] * len(windows)
    prefix = len(served.framing.prefix)
    started = time.perf_counter()
    lengths = [len(window) for window in windows]
    for indices in plan_batches(lengths, params.batch_size, params.max_batch_tokens, params.max_batch_attention):
        arrays = pad_batch([windows[index].input_ids for index in indices], served.pad_id)
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


def score_block(served: ServedModel, prepared: PreparedBlock, params: InferParams) -> tuple[pa.Table, Tally]:
    """Score a prepared block; returns its predictions table (input order) and its tally."""
    block, encoded = prepared.block, prepared.encoded
    tally = Tally(blocks=1, rows=len(block.texts), skipped=sum(prepared.skipped))
    tally.text_issues = dict(Counter(issue for issue in block.issues if issue is not None))
    predictions = predict_rows(served, prepared, params, tally)
    names = np.asarray(served.labels, dtype=object)
    ignore = frozenset(params.span_ignore_labels)
    schema = output_schema(block.ids.type, params.probabilities)
    columns: dict[str, list] = {name: [] for name in schema.names}
    columns["id"] = block.ids
    gold = block.gold or [None] * len(encoded)
    rows = zip(prepared.texts, block.issues, prepared.skipped, predictions, encoded, gold, strict=True)
    for index, (text, issue, skipped, prediction, tokens, row_gold) in enumerate(rows):
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
        spans = aggregate_spans(text, labels, starts, ends, token_scores, ignore)
        columns["spans"].append(spans)
        if row_gold is not None and not skipped:
            where = f"block row {index} (id {block.ids[index].as_py()!r})"
            expected = scored_gold(gold_for_model(row_gold, text, served.labels, ignore, where), offsets)
            tally.entities.count_row(expected, predicted_spans(text, spans))
            tally.entities.count_tokens(gold_token_types(text, offsets, expected), token_types(labels, ignore))
        if params.probabilities:
            columns["probabilities"].append(prediction.probabilities.tolist())
        tally.tokens += len(labels)
        tally.truncated_rows += truncated
        for name, count in Counter(labels).items():
            tally.label_counts[name] = tally.label_counts.get(name, 0) + count
    return pa.Table.from_pydict(columns, schema=schema), tally


def score_rows(served: ServedModel, block: Block, params: InferParams) -> tuple[pa.Table, Tally]:
    """Prepare and score a block of rows in one call (for engines that do not pipeline)."""
    return score_block(served, prepare_block(served, block, params), params)
