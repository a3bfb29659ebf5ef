"""The baseline a user writes by hand: torch eager fp32, dataset order, batches of 32, each padded to its longest row;
with `--sorted-bf16`, what a user who knows their CPU writes: rows sorted by length, torch bf16 autocast.

    python -m tools.bench.naive --model-dir models/model --dataset data/demo.parquet --out /tmp/naive
    python -m tools.bench.naive --model-dir models/model --dataset data/demo.parquet --out /tmp/bf16 --sorted-bf16

Run by `tools.bench.end_to_end` in its own process (so its memory is its own). Writes each row's
label ids (content tokens only) to `labels.parquet` and its timing and peak memory to `report.json`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import AutoTokenizer

from stages.core.memory import peak_rss_mb
from stages.core.runner import run_stage
from stages.model.directory import load_model_dir
from tools.bench.settings import all_threads
from tools.cli import option, parse

PANDAS_READERS = {
    ".parquet": pd.read_parquet,
    ".csv": pd.read_csv,
    ".jsonl": lambda path: pd.read_json(path, lines=True),
}


def user_texts(dataset: Path, text_column: str) -> list[str]:
    """The texts as a user reads them: pandas, missing values as empty text."""
    return [text if isinstance(text, str) else "" for text in PANDAS_READERS[dataset.suffix](dataset)[text_column]]


def label_rows(
    model_dir: Path, dataset: Path, text_column: str, batch_size: int, max_length: int, sorted_bf16: bool = False
) -> tuple[list, float]:
    """Each row's predicted label ids over its content tokens, in dataset order, and the seconds from reading the
    dataset to the last batch (loading the model is not counted, as in `infer`'s metrics). `sorted_bf16`: batches
    of rows sorted by length, under torch's bf16 autocast."""
    model, spec = load_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    started = time.perf_counter()
    texts = user_texts(dataset, text_column)
    order = sorted(range(len(texts)), key=lambda row: len(texts[row])) if sorted_bf16 else list(range(len(texts)))
    rows: list = [None] * len(texts)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=sorted_bf16)
    with torch.inference_mode(), autocast:
        for start in range(0, len(texts), batch_size):
            chosen = order[start : start + batch_size]
            batch = tokenizer(
                [texts[row] for row in chosen],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
            inputs = {name: batch[name] for name in spec.input_names if name in batch}
            labels = model(**inputs).argmax(dim=-1)
            content = (batch["attention_mask"] == 1) & (batch["special_tokens_mask"] == 0)
            for position, row in enumerate(chosen):
                rows[row] = labels[position][content[position]].tolist()
    return rows, time.perf_counter() - started


@dataclass(frozen=True)
class Naive:
    """The hand-written loop's settings."""

    model_dir: Path = option(help="a normalised model directory (load_checkpoint's output)")
    dataset: Path = option(help="a .parquet/.csv/.jsonl dataset, read with pandas")
    out: Path = option(help="where labels.parquet and report.json are written")
    text_column: str = option("text", "the dataset's text column")
    batch_size: int = option(32, "rows per batch")
    max_length: int = option(512, "tokens per row at most")
    threads: int = option(help="torch's threads (default: all)", factory=all_threads)
    sorted_bf16: bool = option(False, "batch rows sorted by character length, under torch's bf16 autocast")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(Naive, argv, __doc__)
    torch.set_num_threads(args.threads)
    rows, seconds = label_rows(
        args.model_dir, args.dataset, args.text_column, args.batch_size, args.max_length, args.sorted_bf16
    )
    args.out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"label_ids": pa.array(rows, pa.list_(pa.int16()))}), args.out / "labels.parquet")
    report = {"rows": len(rows), "seconds": round(seconds, 3), "peak_rss_mb": peak_rss_mb(), "threads": args.threads}
    (args.out / "report.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    run_stage(main)
