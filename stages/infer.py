"""Stage `infer`: score a text dataset with the ONNX model, at dataset scale, resumably.

The dataset is read in windows of `infer.window_rows` rows; a background thread reads and
tokenises the next window while the model scores the current one. Each window becomes a shard in
`<output>.parts/`, written atomically with its tally; a rerun after a crash (SIGKILL included)
continues from the finished shards if the input, model and params are unchanged. When all shards
are done they are joined into the output file, which appears by an atomic rename.

With `infer.engine: ray` the same scoring runs on a Ray Data actor pool instead (`stages/ray_engine.py`),
into the same output file and the same metrics keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import resource
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import pyarrow.parquet as pq
from tqdm import tqdm

from stages.atomic import atomic_path, ensure_directory, write_json
from stages.dataset import iter_chunks, row_count
from stages.encoding import Framing
from stages.errors import UserError, run_stage
from stages.params import InferParams, Params, load_params
from stages.runtime import ONNX_FILE, SIDECAR_FILE, provider_of
from stages.scoring import PreparedBlock, ServedModel, Tally, prepare_block, score_block

log = logging.getLogger(__name__)

Item = TypeVar("Item")
MANIFEST = "manifest.json"


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


def fingerprint(params: Params) -> str:
    """What the shards depend on: the input file, the exported model, and the params that shape outputs."""
    source = Path(params.infer.input).stat()
    onnx_dir = Path(params.export.output)
    scoring = {key: value for key, value in asdict(params.infer).items() if key not in ("output", "metrics")}
    identity = {
        "input": [str(Path(params.infer.input).resolve()), source.st_size, source.st_mtime_ns],
        "model": (onnx_dir / SIDECAR_FILE).read_text(encoding="utf-8"),
        "model_size": (onnx_dir / ONNX_FILE).stat().st_size,
        "infer": scoring,
        "providers": list(params.runtime.providers),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class Shards:
    """The finished windows of one run, kept in `<output>.parts/` until the output file is complete."""

    def __init__(self, output: Path, key: str) -> None:
        self.directory = output.with_name(output.name + ".parts")
        manifest = self.directory / MANIFEST
        if self.directory.exists() and not (
            manifest.is_file() and json.loads(manifest.read_text())["fingerprint"] == key
        ):
            log.info("discarding %s: it belongs to another input, model or params", self.directory)
            shutil.rmtree(self.directory)
        ensure_directory(self.directory)
        write_json(manifest, {"fingerprint": key})

    def path(self, index: int) -> Path:
        return self.directory / f"shard-{index:06d}.parquet"

    def finished(self, index: int) -> Tally | None:
        """The tally of a finished shard, or None."""
        if not self.path(index).is_file():
            return None
        return Tally(**json.loads(self.path(index).with_suffix(".json").read_text()))

    def save(self, index: int, table, tally: Tally) -> None:
        """Write the tally, then the shard: a shard file exists only once both are complete."""
        write_json(self.path(index).with_suffix(".json"), asdict(tally))
        with atomic_path(self.path(index)) as temporary:
            pq.write_table(table, temporary, compression="zstd")

    def join(self, output: Path) -> None:
        """Concatenate the shards in order into `output` (atomically), then remove the parts."""
        with atomic_path(output) as temporary:
            writer = None
            for path in sorted(self.directory.glob("shard-*.parquet")):
                table = pq.read_table(path)
                if writer is None:
                    writer = pq.ParquetWriter(temporary, table.schema, compression="zstd")
                writer.write_table(table)
            writer.close()
        shutil.rmtree(self.directory)


def blocks_to_score(
    params: Params, served: ServedModel, shards: Shards
) -> Iterator[tuple[int, PreparedBlock | None, Tally | None]]:
    """Each window of the dataset: prepared for the model, or the tally of its finished shard."""
    chunks = iter_chunks(
        Path(params.infer.input), params.infer.text_column, params.infer.id_column, params.infer.window_rows
    )
    for index, chunk in enumerate(chunks):
        done = shards.finished(index)
        yield index, None if done else prepare_block(served, chunk, params.infer), done


def score_dataset(params: Params, served: ServedModel) -> Tally:
    """Score every row of `infer.input` into `infer.output`, resuming from finished shards."""
    output = Path(params.infer.output)
    shards = Shards(output, fingerprint(params))
    tally = Tally()
    total = row_count(Path(params.infer.input))
    with tqdm(total=total, unit="rows", file=sys.stderr, dynamic_ncols=True, mininterval=1.0) as progress:
        for index, block, done in prefetch(blocks_to_score(params, served, shards)):
            if block is not None:
                table, done = score_block(served, block, params.infer)
                shards.save(index, table, done)
            tally.add(done)
            progress.update(done.rows)
    if not tally.rows:
        raise UserError(f"dataset {params.infer.input} has no rows (infer.input)")
    shards.join(output)
    return tally


def build_metrics(
    tally: Tally, seconds: float, *, engine: str, provider: str, threads: int, peak_rss_mb: float
) -> dict:
    """`metrics/infer.json`, the same keys for every engine: volumes, padding, throughput, engine, provider,
    onnxruntime threads (all sessions together), peak memory (of the largest process), and the demo's reference accuracy.
    """
    metrics = {
        "rows": tally.rows,
        "skipped": tally.skipped,
        "text_issues": tally.text_issues,
        "tokens": tally.tokens,
        "windows": tally.windows,
        "truncated_rows": tally.truncated_rows,
        "padding_ratio": round(1 - tally.tokens / tally.token_slots, 4) if tally.token_slots else 0.0,
        "seconds": round(seconds, 3),
        "model_seconds": round(tally.model_seconds, 3),
        "texts_per_s": round(tally.rows / seconds, 2),
        "tokens_per_s": round(tally.tokens / seconds, 1),
        "engine": engine,
        "provider": provider,
        "threads": threads,
        "peak_rss_mb": peak_rss_mb,
        "label_counts": tally.label_counts,
    }
    if tally.reference_total:
        metrics["token_accuracy"] = round(tally.reference_correct / tally.reference_total, 5)
    return metrics


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def check_stride(params: InferParams, framing: Framing) -> None:
    """Sliding windows must advance: the stride must be shorter than a window's content."""
    if params.long_text == "sliding_window" and params.stride >= framing.capacity:
        raise UserError(
            f"infer.stride = {params.stride} must be smaller than the {framing.capacity} content tokens of a window"
        )


def score_locally(params: Params) -> dict:
    """Engine `local`: score the dataset in this process (resumably); returns the metrics."""
    served = ServedModel.load(Path(params.export.output), params.runtime)
    check_stride(params.infer, served.framing)
    started = time.perf_counter()
    tally = score_dataset(params, served)
    return build_metrics(
        tally,
        time.perf_counter() - started,
        engine="local",
        provider=provider_of(served.session),
        threads=params.runtime.intra_op_num_threads or os.cpu_count(),
        peak_rss_mb=peak_rss_mb(),
    )


def main() -> None:
    params = load_params()
    if params.infer.engine == "ray":
        try:
            from stages.ray_engine import score_with_ray  # Ray is an optional extra, imported only when asked for
        except ModuleNotFoundError as error:
            if error.name != "ray":
                raise
            raise UserError(
                "infer.engine = ray needs Ray Data: pip install -e '.[ray]', or set infer.engine: local"
            ) from None
        metrics = score_with_ray(params)
    else:
        metrics = score_locally(params)
    write_json(Path(params.infer.metrics), metrics)
    summary = (
        f"{metrics['rows']} rows ({metrics['skipped']} skipped), {metrics['tokens']} tokens in {metrics['seconds']} s: "
        f"{metrics['texts_per_s']} texts/s, padding {metrics['padding_ratio']:.1%}, {metrics['provider']}"
    )
    if "token_accuracy" in metrics:
        summary += f", token accuracy vs demo rules {metrics['token_accuracy']:.4f}"
    log.info("wrote %s: %s", params.infer.output, summary)


if __name__ == "__main__":
    run_stage(main)
