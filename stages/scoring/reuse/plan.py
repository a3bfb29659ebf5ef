"""Blocks and batches cut where the content says, so that a row is scored with the same neighbours whatever
else the dataset holds.

A row's scores depend, in their last bits, on the batch it runs in (its companions and the padded length;
dynamic int8 quantizes the whole batch with one scale). To reuse a stored score byte for byte, the row's
batch must be the one a run from scratch would build. So blocks end after rows whose key says so (as rsync
and restic cut files), and inside a block the windows are sorted by length and key and batches end before
windows whose key says so, or where the budget is full. An appended, edited or deleted row changes the
block it is in and the one or two batches around it; every other batch is the same as before.

A model whose scores do not depend on their batch (measured: `ServedModel.batch_invariant`; fp32 on onnxruntime's
CPU provider is) needs none of that: its rows are reused whatever batch they ran in, and only the rows not stored
are batched and scored (`row_plan`). The batch context stays for the others (`batch_plan`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from stages.core.errors import UserError
from stages.core.params import InferParams, Params
from stages.scoring.batching import plan_batches
from stages.scoring.datasets.blocks import Block, check_id_type, dataset_files, file_blocks
from stages.scoring.reuse.keys import BATCH_CUT, KEY_BYTES, block_keys, combined_key, key_number
from stages.scoring.reuse.rows import StoredRows, key_words
from stages.scoring.storage.locations import Location

FILE_BLOCKS = 1_000_000  # a block's number: its file's number x FILE_BLOCKS + its place among the file's blocks


def scoring_blocks(params: Params) -> Iterator[Block]:
    """The blocks `infer` scores: `infer.input`'s rows, with their gold, in content-defined blocks."""
    return (block for _, block in numbered_blocks(params))


def numbered_blocks(params: Params) -> Iterator[tuple[int, Block]]:
    """Every block `infer` scores, with its number (`file_blocks_numbered`), in dataset order; the files of a
    directory must share one id type."""
    infer = params.infer
    id_type: pa.DataType | None = None
    for number, (source, _) in enumerate(dataset_files(infer.input)):
        for index, block in file_blocks_numbered(params, number, source):
            id_type = id_type or block.ids.type
            check_id_type(source.name, str(block.ids.type), str(id_type), infer.id_column, infer.input)
            yield index, block


def file_blocks_numbered(params: Params, file_number: int, source: Location) -> Iterator[tuple[int, Block]]:
    """One file's rows in content-defined blocks, each numbered `file_number x FILE_BLOCKS + its place`: a block
    is cut and numbered from its own file alone, so the files of a directory can be read apart (engine `ray`
    reads each on a worker) into the blocks one reader of the whole dataset makes."""
    infer = params.infer
    rows = file_blocks(source, infer.text_column, infer.id_column, infer.block_rows, params.annotations, "infer.input")
    for place, block in enumerate(content_blocks(rows, infer.block_rows)):
        if place == FILE_BLOCKS:
            raise UserError(
                f"dataset {source.name} holds over {FILE_BLOCKS:,} blocks of about infer.block_rows = "
                f"{infer.block_rows} rows; raise infer.block_rows or split the file"
            )
        yield file_number * FILE_BLOCKS + place, block


def content_blocks(blocks: Iterator[Block], block_rows: int) -> Iterator[Block]:
    """The rows of `blocks`, in order, regrouped into blocks that end where `block_cuts` says."""
    pending: list[Block] = []
    pending_rows = 0
    for block in blocks:
        keys = block_keys(block)
        start = 0
        for cut in block_cuts(keys, pending_rows, block_rows):
            pending.append(slice_block(block, keys, start, cut + 1))
            yield join_blocks(pending)
            pending, pending_rows, start = [], 0, cut + 1
        if start < len(keys):
            pending.append(slice_block(block, keys, start, len(keys)))
            pending_rows += len(keys) - start
    if pending:
        yield join_blocks(pending)


def block_cuts(keys: list[bytes], pending_rows: int, block_rows: int) -> Iterator[int]:
    """The rows after which blocks end, when `pending_rows` rows before `keys` are in no block yet: a block has at
    least half of `block_rows` rows, then ends after a row whose key number is a multiple of that half (about
    `block_rows` rows on average), and has at most twice `block_rows`. Found with array operations, not row by row."""
    half = max(1, block_rows // 2)
    numbers = np.frombuffer(b"".join(keys), dtype="<u8")[:: KEY_BYTES // 8]
    candidates = np.flatnonzero(numbers % half == 0)
    start = 0
    while True:  # a block ends at the first candidate once it has `half` rows, or at `2 * block_rows` rows
        earliest = start + max(0, half - pending_rows - 1)
        forced = start + 2 * block_rows - pending_rows - 1
        after = np.searchsorted(candidates, earliest)
        cut = min(int(candidates[after]) if after < len(candidates) else len(keys), forced)
        if cut >= len(keys):
            return
        yield cut
        start, pending_rows = cut + 1, 0


def slice_block(block: Block, keys: list[bytes], start: int, stop: int) -> Block:
    return Block(
        block.ids.slice(start, stop - start),
        block.texts[start:stop],
        block.issues[start:stop],
        None if block.gold is None else block.gold[start:stop],
        keys[start:stop],
        words=None if block.words is None else block.words[start:stop],
    )


def join_blocks(blocks: Sequence[Block]) -> Block:
    if len(blocks) == 1:
        return blocks[0]
    gold = None if blocks[0].gold is None else [spans for block in blocks for spans in block.gold]
    words = None if blocks[0].words is None else [words for block in blocks for words in block.words]
    return Block(
        pa.concat_arrays([block.ids for block in blocks]),
        [text for block in blocks for text in block.texts],
        [issue for block in blocks for issue in block.issues],
        gold,
        [key for block in blocks for key in block_keys(block)],
        words=words,
    )


def content_batches(
    lengths: Sequence[int], keys: Sequence[bytes], max_rows: int, max_tokens: int, max_attention: int
) -> Iterator[np.ndarray]:
    """Window indices grouped into batches: sorted longest first (ties by key), each batch ending before a window
    whose key says so, or where `max_rows` rows, `max_tokens` padded slots or `max_attention` rows x length^2
    would be exceeded."""
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], keys[index]))
    batch: list[int] = []
    for index in order:
        if batch:
            longest = max(lengths[batch[0]], 1)
            cap = max(1, min(max_rows, max_tokens // longest, max_attention // longest**2))
            if len(batch) >= cap or key_number(keys[index]) % BATCH_CUT == 0:
                yield np.asarray(batch, dtype=np.int64)
                batch = []
        batch.append(index)
    if batch:
        yield np.asarray(batch, dtype=np.int64)


def row_plan(spans: list[tuple[int, int, int]], specials: int, params: InferParams) -> list[np.ndarray]:
    """For a batch-invariant model (whose stored rows are reused whatever batch they ran in, and get no `spans`): the
    windows batched longest first under the budget."""
    budget = (params.batch_size, params.max_batch_tokens, params.max_batch_attention)
    return list(plan_batches([length + specials for _, _, length in spans], *budget))


def batch_plan(
    keys: list[bytes], stored: StoredRows, first: np.ndarray, spans: list[tuple[int, int, int]], specials: int,
    params: InferParams,
) -> tuple[list[bytes], np.ndarray, list[np.ndarray]]:  # fmt: skip
    """For a model whose scores depend on their batch (dynamic int8): every window batched where the content says, a
    stored row reused only if its batches are the ones it ran in (`first`: each key's first stored row), and the
    batches holding any other row run. The rows' batch contexts, each row's stored row (-1: scored), the batches."""
    window_keys = [combined_key([keys[row], start.to_bytes(4, "little")]) for row, start, _ in spans]
    budget = (params.batch_size, params.max_batch_tokens, params.max_batch_attention)
    planned = list(content_batches([length + specials for _, _, length in spans], window_keys, *budget))
    batch_of = np.empty(len(spans), dtype=np.int64)
    for number, members in enumerate(planned):
        batch_of[members] = number
    batch_keys = [combined_key([window_keys[index] for index in members]) for members in planned]
    row_batches: list[list[int]] = [[] for _ in keys]
    for index, (row, _, _) in enumerate(spans):
        row_batches[row].append(int(batch_of[index]))
    contexts = [combined_key([batch_keys[number] for number in numbers]) for numbers in row_batches]
    at = stored.in_context(key_words(keys), key_words(contexts), first)
    run = sorted({number for row in np.flatnonzero(at < 0).tolist() for number in row_batches[row]})
    return contexts, at, [planned[number] for number in run]
