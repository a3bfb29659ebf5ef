"""Scoring a block of rows with an exported model: the core that every engine runs (`block_part`).

A block of ids and texts becomes a part file in the predictions schema, in input order, and its tally. Rows
the score store holds are taken from it (`stages.scoring.reuse`): for a batch-invariant model whatever batch they
ran in, else with the same batch context; the others are tokenised, cut into windows, batched longest first
under a row and a token budget (`stages.scoring.prepare`, `stages.scoring.reuse.plan`) and scored, each token's
prediction from the window where it is most central.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.core.errors import UserError
from stages.core.params import InferParams
from stages.scoring.aggregation import SIMPLE, softmax, word_ranges
from stages.scoring.batching import pad_batch
from stages.scoring.datasets.annotations import gold_for_model
from stages.scoring.datasets.blocks import Block
from stages.scoring.decoding import decoded_labels
from stages.scoring.metrics import Tally
from stages.scoring.predictions import output_schema
from stages.scoring.prepare import PreparedBlock, TokenisedBlock, plan_block
from stages.scoring.quality import cut_gold, gold_token_types, on_words, predicted_spans, token_types
from stages.scoring.reuse.rows import gather
from stages.scoring.reuse.store import DamagedEntry, ScoreStore, block_key, key_array
from stages.scoring.served import ServedModel
from stages.scoring.storage.parts import Part, encode_part
from stages.scoring.windows import RowPrediction, WindowOutputs, merge_windows


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


def predict_rows(served: ServedModel, block: PreparedBlock, tally: Tally) -> dict[int, RowPrediction]:
    """Run the planned batches through the model and merge each scored row's windows back into its prediction (a CRF
    head's labels decoded over each window's tokens)."""
    windows = block.windows
    outputs = WindowOutputs.empty(len(windows), len(served.labels), served.crf is not None)
    prefix = len(served.framing.prefix)
    started = time.perf_counter()
    for indices in block.batches:
        arrays = pad_batch([windows[index].input_ids for index in indices], served.pad_id)
        logits = served.runner.logits(arrays)
        labels = decoded_labels(served.crf, logits, arrays["attention_mask"])
        outputs.take(indices, windows, prefix, softmax(logits), labels)
        tally.token_slots += arrays["attention_mask"].size
        tally.model_tokens += sum(len(windows[index].input_ids) for index in indices)
    tally.model_seconds += time.perf_counter() - started
    tally.windows += len(windows)
    merged = merge_windows({row: len(block.encoded[row]) for row in block.scored}, windows, outputs)
    return dict(zip(block.scored, merged, strict=True))


def row_outputs(
    served: ServedModel, prepared: PreparedBlock, predictions: dict[int, RowPrediction], params: InferParams
) -> dict[str, list]:
    """The output columns (all but the id) of the scored rows, in `prepared.scored` order."""
    names = np.asarray(served.labels, dtype=object)
    aggregation = served.aggregation(params.aggregation, frozenset(params.span_ignore_labels))
    schema = output_schema(pa.string(), params.probabilities, aggregation.word_level)
    columns: dict[str, list] = {name: [] for name in schema.names[1:]}
    for row in prepared.scored:
        prediction, tokens, text = predictions[row], prepared.encoded[row], prepared.tokenised.texts[row]
        offsets = tokens.offsets[prediction.positions]
        decoded = None if served.crf is None else prediction.label_ids
        reading = aggregation.read(
            text, tokens.input_ids[prediction.positions], offsets, prediction.probabilities, decoded
        )
        columns["n_tokens"].append(len(prediction.positions))
        columns["truncated"].append(len(prediction.positions) < len(tokens))
        skipped = prepared.tokenised.skipped[row]
        columns["skipped_reason"].append(prepared.tokenised.block.issues[row] if skipped else None)
        columns["label_ids"].append(prediction.label_ids.tolist())
        columns["labels"].append(names[prediction.label_ids].tolist())
        columns["starts"].append(offsets[:, 0].tolist())
        columns["ends"].append(offsets[:, 1].tolist())
        columns["spans"].append(reading.spans)
        if aggregation.word_level:
            columns["word_starts"].append(reading.word_starts)
            columns["word_ends"].append(reading.word_ends)
            columns["word_labels"].append(reading.word_labels)
        if params.probabilities:
            columns["probabilities"].append(prediction.probabilities.tolist())
    return columns


def block_outputs(prepared: PreparedBlock, scored: pa.Table, store: ScoreStore | None) -> pa.Table:
    """Every row's output columns in input order: the scored rows' and the reused ones' (as they are stored)."""
    table_of = np.zeros(len(prepared.tokenised.keys), dtype=np.int64)
    row_of = np.zeros(len(prepared.tokenised.keys), dtype=np.int64)
    row_of[prepared.scored] = np.arange(len(prepared.scored))
    tables = [scored]
    if store is not None and len(prepared.reused):
        reused = prepared.reused
        stored, table_of[reused], row_of[reused] = store.sources(prepared.stored, prepared.reused_at)
        table_of[reused] += 1
        tables += [table.select(scored.column_names) for table in stored]
    return gather(tables, table_of, row_of)


def count_quality(
    served: ServedModel, prepared: PreparedBlock, outputs: pa.Table, params: InferParams, tally: Tally
) -> None:
    """Tokens, truncations, labels, and entity and token counts against gold (a truncated row's cut gold spans
    counted as misses, and counted), from the rows' outputs."""
    tokens = outputs.column("n_tokens").to_numpy()
    tally.tokens += int(tokens.sum())
    tally.reused_tokens += int(tokens[prepared.reused].sum())
    tally.truncated_rows += int(pc.sum(outputs.column("truncated")).as_py() or 0)
    label_ids = pc.list_flatten(outputs.column("label_ids")).to_numpy()
    for label, count in zip(served.labels, np.bincount(label_ids, minlength=len(served.labels)).tolist(), strict=True):
        if count:
            tally.label_counts[label] = tally.label_counts.get(label, 0) + count
    tokenised = prepared.tokenised
    block = tokenised.block
    if block.gold is None:
        return
    ignore, word_level = frozenset(params.span_ignore_labels), params.aggregation != SIMPLE
    names = ("labels", "starts", "ends", "spans", "truncated", *(("word_starts", "word_ends") if word_level else ()))
    columns = {name: outputs.column(name).to_pylist() for name in names}
    for index, text in enumerate(tokenised.texts):
        if tokenised.skipped[index]:
            continue
        labels = columns["labels"][index]
        offsets = np.stack([columns["starts"][index], columns["ends"][index]], axis=-1).reshape(-1, 2)
        where = f"block row {index} (id {block.ids[index].as_py()!r})"
        expected = gold_for_model(block.gold[index], text, served.labels, ignore, where)
        if columns["truncated"][index]:  # the spans in the cut text stay in the gold: they count as misses
            tally.cut_gold_spans += cut_gold(expected, offsets)
        found = predicted_spans(text, columns["spans"][index])
        tally.entities.count_tokens(gold_token_types(text, offsets, expected), token_types(labels, ignore))
        if word_level:  # on the gold's words where it names them, else on the model's
            model_words = word_ranges(columns["word_starts"][index], columns["word_ends"][index])
            words = model_words if block.words is None else block.words[index]
            expected, found = on_words(expected, words, text), on_words(found, words, text)
        tally.entities.count_row(expected, found)


def score_block(
    served: ServedModel, prepared: PreparedBlock, params: InferParams, store: ScoreStore | None
) -> tuple[pa.Table, Tally, pa.Table]:
    """Score a prepared block (its reused rows read from the store): its predictions table (input order), its tally,
    and its rows' keys, batch contexts and content token counts (what the store indexes)."""
    tokenised = prepared.tokenised
    block = tokenised.block
    tally = Tally(blocks=1, rows=len(block.texts), skipped=sum(tokenised.skipped), reused_rows=len(prepared.reused))
    tally.text_issues = dict(Counter(issue for issue in block.issues if issue is not None))
    schema = output_schema(block.ids.type, params.probabilities, params.aggregation != SIMPLE)
    columns = row_outputs(served, prepared, predict_rows(served, prepared, tally), params)
    scored = pa.Table.from_pydict(columns, schema=pa.schema(list(schema)[1:]))
    outputs = block_outputs(prepared, scored, store)
    count_quality(served, prepared, outputs, params, tally)
    rows = pa.table({
        "key": key_array(tokenised.keys),
        "context": key_array(prepared.contexts),
        "content_tokens": pa.array(prepared.content_tokens, pa.int32()),
    })  # fmt: skip
    return outputs.add_column(0, schema.field("id"), block.ids), tally, rows


def block_part(
    served: ServedModel,
    block: Block,
    params: InferParams,
    store: ScoreStore | None,
    ready: TokenisedBlock | PreparedBlock | None = None,
) -> Part:
    """A block's part: the store's copy of the whole block, or scored (unchanged rows from the store) and stored.
    `ready`: the block already tokenised or prepared, ahead of the model (the store's copy was looked for then).
    A store entry that fails its check as it is read is dropped, the block planned again."""
    if not isinstance(ready, PreparedBlock) and store is not None and (stored := store.block(block)) is not None:
        return stored
    while True:
        try:
            prepared = ready if isinstance(ready, PreparedBlock) else plan_block(served, block, params, store, ready)
            table, tally, rows = score_block(served, prepared, params, store)
            break
        except DamagedEntry:
            ready = None
    part = Part(encode_part(table), tally, table)
    if store is not None:
        store.save(block_key(block), part, rows)
    return part


def score_rows(served: ServedModel, block: Block, params: InferParams) -> tuple[pa.Table, Tally]:
    """Prepare and score a block of rows in one call, without a store (for tools and tests)."""
    return score_block(served, plan_block(served, block, params, None), params, None)[:2]
