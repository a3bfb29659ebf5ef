"""A block planned for the model, in two steps: tokenised (`tokenise_block`: the bad-row policy, the rows' keys, the
text the store lacks tokenised; needs no model, so engine `ray` runs it in CPU actors beside the model's), then
planned (`prepare_block`: the rows the store gives, the windows and batches that score the rest; needs the model's
measured batch invariance, so it runs where the model does)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.core.params import InferParams
from stages.scoring.datasets.blocks import Block
from stages.scoring.reuse.keys import ROW_CONTEXT, block_keys, row_keys
from stages.scoring.reuse.plan import batch_plan, row_plan
from stages.scoring.reuse.rows import EMPTY, StoredRows, key_words
from stages.scoring.reuse.store import ScoreStore
from stages.scoring.served import ServedModel
from stages.scoring.tokens import EncodedText, TextTokenizer
from stages.scoring.windows import Window, window_spans


@dataclass(frozen=True)
class TokenisedBlock:
    """A block with the bad-row policy applied, its rows keyed, and the rows the store lacked tokenised."""

    block: Block
    texts: list[str]  # what is scored: "" for skipped rows
    skipped: list[bool]
    keys: list[bytes]
    encoded: dict[int, EncodedText]  # by row


@dataclass(frozen=True)
class PreparedBlock:
    """A block of rows planned for the model: which rows the store gives, and the batches that score the rest."""

    tokenised: TokenisedBlock
    contexts: list[bytes]  # each row's batch context: the keys of the batches its windows run in
    content_tokens: np.ndarray
    stored: StoredRows  # the store's rows when the block was planned
    reused: np.ndarray  # rows whose stored scores have this batch context, in order
    reused_at: np.ndarray  # where each of them is in `stored`
    scored: list[int]  # the other rows, scored here
    encoded: dict[int, EncodedText]  # the rows tokenised: the scored ones and their batch companions
    windows: list[Window]  # the windows of the batches to run
    batches: list[np.ndarray]  # indices into `windows`


def tokenise_block(
    tokenizer: TextTokenizer, block: Block, params: InferParams, store: ScoreStore | None
) -> TokenisedBlock:
    """Apply the bad-row policy, key the rows, tokenise those the store does not hold (the CPU work that needs no
    model)."""
    skipped = [params.bad_rows == "skip" and issue is not None for issue in block.issues]
    texts = ["" if skip else text for text, skip in zip(block.texts, skipped, strict=True)]
    keys = row_keys(texts, block.issues) if any(skipped) else block_keys(block)
    stored = store.stored_rows() if store is not None else EMPTY
    missing = np.flatnonzero(stored.first(key_words(keys)) < 0).tolist()
    return TokenisedBlock(block, texts, skipped, keys, tokenise(tokenizer, texts, missing, {}))


def prepare_block(
    served: ServedModel, tokenised: TokenisedBlock, params: InferParams, store: ScoreStore | None
) -> PreparedBlock:
    """Find the stored rows, plan the batches, build the windows (tokenising any row the store lacks that
    `tokenised` does not hold: the store may have changed since, and batch companions of the rows scored)."""
    texts, keys = tokenised.texts, tokenised.keys
    words = key_words(keys)
    stored = store.stored_rows() if store is not None else EMPTY
    first = stored.first(words)
    missing = np.flatnonzero(first < 0).tolist()
    encoded = tokenise(
        served.tokenizer, texts, [row for row in missing if row not in tokenised.encoded], tokenised.encoded
    )
    content_tokens = stored.tokens[first] if len(stored.keys) else np.zeros(len(keys), dtype=np.int64)
    content_tokens[missing] = [len(encoded[row]) for row in missing]
    framing, invariant = served.framing, served.batch_invariant(texts)
    specials = len(framing.prefix) + len(framing.suffix)
    alone = np.broadcast_to(key_words([ROW_CONTEXT]), words.shape)
    stored_alone = stored.in_context(words, alone, first) if invariant else np.full(len(keys), -1)
    spans = [  # a batch-invariant model's stored rows are reused whatever batch they ran in: they get no windows
        (row, start, length)
        for row in np.flatnonzero(stored_alone < 0).tolist()
        for start, length in window_spans(int(content_tokens[row]), framing, params.long_text, params.stride)
    ]
    if invariant:
        contexts, at, run = [ROW_CONTEXT] * len(keys), stored_alone, row_plan(spans, specials, params)
    else:
        contexts, at, run = batch_plan(keys, stored, first, spans, specials, params)
    reused = np.flatnonzero(at >= 0)
    members = [int(index) for batch in run for index in batch]
    companions = sorted({spans[index][0] for index in members} - set(encoded))
    encoded = tokenise(served.tokenizer, texts, companions, encoded)
    windows = []
    for index in members:
        row, start, length = spans[index]
        content = encoded[row].input_ids[start : start + length]
        windows.append(Window(row, start, length, np.concatenate([framing.prefix, content, framing.suffix])))
    sizes = np.cumsum([0, *(len(batch) for batch in run)])
    batches = [np.arange(sizes[position], sizes[position + 1]) for position in range(len(run))]
    scored = np.flatnonzero(at < 0).tolist()
    return PreparedBlock(
        tokenised, contexts, content_tokens, stored, reused, at[reused], scored, encoded, windows, batches
    )


def plan_block(
    served: ServedModel,
    block: Block,
    params: InferParams,
    store: ScoreStore | None,
    tokenised: TokenisedBlock | None = None,
) -> PreparedBlock:
    """`block` tokenised (unless `tokenised` is at hand) and prepared for the model."""
    tokenised = tokenised or tokenise_block(served.tokenizer, block, params, store)
    return prepare_block(served, tokenised, params, store)


def tokenise(
    tokenizer: TextTokenizer, texts: list[str], rows: list[int], encoded: dict[int, EncodedText]
) -> dict[int, EncodedText]:
    """`encoded` with `rows` tokenised too."""
    if not rows:
        return encoded
    return {**encoded, **dict(zip(rows, tokenizer.encode([texts[row] for row in rows]), strict=True))}
