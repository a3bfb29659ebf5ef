"""Stage `infer`: score a text dataset with the ONNX model and write per-token predictions as Parquet.

The dataset is read in chunks of `infer.chunk_rows`; inside a chunk, rows are batched by length to
cut padding and written back in input order. The feed is built from the session's declared inputs,
so int32/int64 graphs and graphs without `token_type_ids` just work. The Parquet file appears by an
atomic rename once complete.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from stages.atomic import atomic_path, write_json
from stages.dataset import Chunk, iter_chunks
from stages.demo_rules import rule_label
from stages.encoding import EncodedText, encode_texts, length_sorted_batches, pad_batch
from stages.errors import UserError, run_stage
from stages.export import ONNX_FILE, SIDECAR_FILE
from stages.params import InferParams, load_params
from stages.runtime import create_session, onnx_logits, provider_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """What `infer` needs from the ONNX directory."""

    session: ort.InferenceSession
    tokenizer: PreTrainedTokenizerBase
    labels: tuple[str, ...]
    max_length: int


@dataclass
class Tally:
    """Running totals for `metrics/infer.json`."""

    rows: int = 0
    tokens: int = 0
    token_slots: int = 0
    truncated_rows: int = 0
    null_texts: int = 0
    invalid_utf8: int = 0
    reference_correct: int = 0
    reference_total: int = 0
    model_seconds: float = 0.0
    label_counts: dict[str, int] = field(default_factory=dict)


def output_schema(id_type: pa.DataType) -> pa.Schema:
    """The predictions file: one row per input row, per-token lists aligned with each other."""
    return pa.schema(
        [
            ("id", id_type),
            ("n_tokens", pa.int32()),
            ("truncated", pa.bool_()),
            ("label_ids", pa.list_(pa.int16())),
            ("labels", pa.list_(pa.string())),
            ("starts", pa.list_(pa.int32())),
            ("ends", pa.list_(pa.int32())),
        ]
    )


def predict_chunk(
    served: ServedModel, texts: list[str], batch_size: int, tally: Tally
) -> tuple[list[EncodedText], list[np.ndarray]]:
    """Token label ids of every non-special token of each text, in input order."""
    rows = encode_texts(served.tokenizer, texts, served.max_length)
    predictions: list[np.ndarray] = [np.empty(0, dtype=np.int16)] * len(rows)
    started = time.perf_counter()
    for indices in length_sorted_batches([len(row) for row in rows], batch_size):
        arrays = pad_batch([rows[index] for index in indices], served.tokenizer.pad_token_id)
        label_ids = onnx_logits(served.session, arrays).argmax(axis=-1).astype(np.int16)
        tally.token_slots += arrays["attention_mask"].size
        for position, index in enumerate(indices):
            row = rows[index]
            predictions[index] = label_ids[position, : len(row)][~row.special]
    tally.model_seconds += time.perf_counter() - started
    return rows, predictions


def chunk_table(
    chunk: Chunk, rows: list[EncodedText], predictions: list[np.ndarray], labels: tuple[str, ...], schema: pa.Schema
) -> pa.Table:
    """Arrow table of one chunk's predictions, in the chunk's row order."""
    label_names = np.asarray(labels, dtype=object)
    offsets = [row.offsets[~row.special] for row in rows]
    return pa.Table.from_pydict(
        {
            "id": chunk.ids,
            "n_tokens": [len(prediction) for prediction in predictions],
            "truncated": [row.truncated for row in rows],
            "label_ids": [prediction.tolist() for prediction in predictions],
            "labels": [label_names[prediction].tolist() for prediction in predictions],
            "starts": [offset[:, 0].tolist() for offset in offsets],
            "ends": [offset[:, 1].tolist() for offset in offsets],
        },
        schema=schema,
    )


def tally_chunk(
    tally: Tally,
    chunk: Chunk,
    rows: list[EncodedText],
    predictions: list[np.ndarray],
    served: ServedModel,
    reference: str,
) -> None:
    """Add one chunk to the running totals (and to the reference accuracy, where asked)."""
    tally.rows += len(rows)
    tally.null_texts += chunk.null_texts
    tally.invalid_utf8 += chunk.invalid_utf8
    tally.truncated_rows += sum(row.truncated for row in rows)
    for row, prediction in zip(rows, predictions, strict=True):
        tally.tokens += len(prediction)
        for label_id, count in zip(*np.unique(prediction, return_counts=True), strict=True):
            name = served.labels[label_id]
            tally.label_counts[name] = tally.label_counts.get(name, 0) + int(count)
        if reference == "demo_rules":
            pieces = served.tokenizer.convert_ids_to_tokens(row.input_ids[~row.special].tolist())
            expected = np.fromiter((rule_label(piece) for piece in pieces), dtype=np.int16, count=len(pieces))
            tally.reference_correct += int(np.count_nonzero(expected == prediction))
            tally.reference_total += len(pieces)


def load_served_model(onnx_dir: Path, params) -> ServedModel:
    """The ONNX session, tokenizer and labels of an exported model directory."""
    import json

    sidecar = onnx_dir / SIDECAR_FILE
    if not sidecar.is_file():
        raise UserError(f"{sidecar} not found (export.output); run the export stage first")
    metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    return ServedModel(
        session=create_session(onnx_dir / ONNX_FILE, params),
        tokenizer=AutoTokenizer.from_pretrained(onnx_dir, local_files_only=True),
        labels=tuple(metadata["labels"]),
        max_length=int(metadata["max_length"]),
    )


def score_dataset(served: ServedModel, params: InferParams) -> Tally:
    """Score every row of `params.input` into `params.output`; returns the totals."""
    tally = Tally()
    output = Path(params.output)
    with atomic_path(output) as temporary:
        writer: pq.ParquetWriter | None = None
        try:
            for chunk in iter_chunks(Path(params.input), params.text_column, params.id_column, params.chunk_rows):
                rows, predictions = predict_chunk(served, chunk.texts, params.batch_size, tally)
                if writer is None:
                    schema = output_schema(chunk.ids.type)
                    writer = pq.ParquetWriter(temporary, schema, compression="zstd")
                writer.write_table(chunk_table(chunk, rows, predictions, served.labels, schema))
                tally_chunk(tally, chunk, rows, predictions, served, params.reference)
                print(f"\rscored {tally.rows} rows", end="", file=sys.stderr, flush=True)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise UserError(f"dataset {params.input} has no rows (infer.input)")
    print(file=sys.stderr)
    return tally


def build_metrics(tally: Tally, seconds: float, served: ServedModel, threads: int) -> dict:
    """`metrics/infer.json`: throughput, padding, provider, and the demo's reference accuracy."""
    metrics = {
        "rows": tally.rows,
        "tokens": tally.tokens,
        "truncated_rows": tally.truncated_rows,
        "null_texts": tally.null_texts,
        "invalid_utf8": tally.invalid_utf8,
        "padding_ratio": round(1 - tally.tokens / tally.token_slots, 4) if tally.token_slots else 0.0,
        "seconds": round(seconds, 3),
        "model_seconds": round(tally.model_seconds, 3),
        "texts_per_s": round(tally.rows / seconds, 2),
        "tokens_per_s": round(tally.tokens / seconds, 1),
        "provider": provider_of(served.session),
        "threads": threads or os.cpu_count(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "label_counts": dict(sorted(tally.label_counts.items())),
    }
    if tally.reference_total:
        metrics["token_accuracy"] = round(tally.reference_correct / tally.reference_total, 5)
    return metrics


def main() -> None:
    params = load_params()
    served = load_served_model(Path(params.export.output), params.runtime)
    started = time.perf_counter()
    tally = score_dataset(served, params.infer)
    metrics = build_metrics(tally, time.perf_counter() - started, served, params.runtime.intra_op_num_threads)
    write_json(Path(params.infer.metrics), metrics)
    summary = f"{metrics['rows']} rows, {metrics['tokens']} tokens in {metrics['seconds']} s ({metrics['texts_per_s']} texts/s) on {metrics['provider']}"
    if "token_accuracy" in metrics:
        summary += f", token accuracy vs demo rules {metrics['token_accuracy']:.4f}"
    log.info("wrote %s: %s", params.infer.output, summary)


if __name__ == "__main__":
    run_stage(main)
