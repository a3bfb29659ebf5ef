"""Engine `local`: score the dataset in this process, block by block, resumably.

A background thread reads and tokenises the next block while the model scores the current one.
Each block becomes a part file as it finishes; a rerun after a crash (SIGKILL included) continues
from the finished parts if the input, model and params are unchanged. When all parts are done they
become the output (`stages.scoring.storage.output`): one file, or a directory of the parts themselves.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
from tqdm import tqdm

from stages.core.memory import peak_rss_mb
from stages.core.params import Params
from stages.graph.verdict import check_verdict, model_digests
from stages.scoring.datasets.blocks import Block, row_count
from stages.scoring.decoding import check_aggregation
from stages.scoring.metrics import Recovery, Tally, build_metrics
from stages.scoring.prepare import PreparedBlock, plan_block
from stages.scoring.reuse.plan import numbered_blocks
from stages.scoring.reuse.store import ScoreStore, open_store
from stages.scoring.score import block_part, naming_block
from stages.scoring.served import ServedModel
from stages.scoring.storage.locations import Location
from stages.scoring.storage.output import (
    Lease,
    duplicate_count,
    finish_output,
    hold_output,
    output_location,
    release_freed_memory,
    streamed_output,
)
from stages.scoring.storage.parts import Part, PartFiles, fingerprint, parts_beside
from stages.scoring.windows import check_stride

Item = TypeVar("Item")


def prefetch(items: Iterator[Item], depth: int = 2) -> Iterator[Item]:
    """Run `items` in a background thread, `depth` ahead of the consumer; its exceptions re-raise here."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((done, None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            ready.put((done, error))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()


def blocks_to_score(
    params: Params, served: ServedModel, parts: PartFiles, store: ScoreStore | None
) -> Iterator[tuple[int, Block, PreparedBlock | Part | Tally]]:
    """Each block of the dataset: the tally of its finished (and verified) part, the store's copy of the block, or
    the block prepared for the model."""
    for index, block in numbered_blocks(params):
        if (done := parts.finished(index)) is not None:
            yield index, block, done
        elif store is not None and (stored := store.block(block)) is not None:
            yield index, block, stored
        else:
            with naming_block(index, block):
                yield index, block, plan_block(served, block, params.infer, store)


def score_dataset(
    params: Params, served: ServedModel, output: Location, lease: Lease, store: ScoreStore | None, verification: dict
) -> tuple[Tally, PartFiles, int]:
    """Score every row of `infer.input` into `output`, resuming from finished parts and reusing stored blocks and
    rows; the tally, the parts, and how many ids repeat an earlier one (counted as blocks pass, not read back)."""
    parts = PartFiles.for_run(parts_beside(output), fingerprint(params, served.runner.identity), verification)
    tally = Tally()
    ids = []
    total = row_count(params.infer.input)
    progress = tqdm(total=total, unit="rows", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
    with progress, streamed_output(output, params.infer.input, parts) as append:
        for index, block, item in prefetch(blocks_to_score(params, served, parts, store)):
            if isinstance(item, Tally):
                part = Part(parts.part(index).read_bytes(), item.resumed())
            elif isinstance(item, Part):
                parts.save(index, part := item)
            else:
                with naming_block(index, block):
                    part = block_part(served, block, params.infer, store, item)
                lease.check()
                parts.save(index, part)
            append(index, part.data if part.table is None else part.table)
            ids.append(block.ids)
            tally.add(part.tally)
            progress.update(part.tally.rows)
        lease.check()
    finish_output(parts, output, params.infer.input, streamed=True)
    return tally, parts, duplicate_count(pa.chunked_array(ids, ids[0].type))


def score_locally(params: Params) -> dict:
    """Engine `local`: score the dataset in this process (resumably), holding the output's lease; the metrics."""
    release_freed_memory()
    output = output_location(params.infer.output)
    with hold_output(output) as lease:
        served = ServedModel.load(Path(params.export.output), params.runtime)
        digests = model_digests(Path(params.export.output))
        verification = check_verdict(
            Path(params.parity.verdict), digests, served.runner.identity, params.infer.allow_unverified
        )
        check_stride(params.infer.long_text, params.infer.stride, served.framing)
        check_aggregation(params.infer.aggregation, served.crf)
        started = time.perf_counter()
        store = open_store(params, served.runner.identity, digests)
        tally, parts, duplicate_ids = score_dataset(params, served, output, lease, store, verification)
        seconds = time.perf_counter() - started
    return {"verified": verification["verified"], "verification": verification} | build_metrics(
        tally,
        seconds,
        engine="local",
        provider=served.runner.provider,
        threads=params.runtime.intra_op_num_threads or os.cpu_count(),
        peak_rss_mb=peak_rss_mb(),
        duplicate_ids=duplicate_ids,
        rows_per_node={socket.gethostname(): tally.rows - tally.resumed_rows},
        recovery=Recovery(rescored_blocks=len(parts.rescored)),
        store=store.summary() if store is not None else None,
        aggregation=params.infer.aggregation,
    )
