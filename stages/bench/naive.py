"""The baseline a user writes by hand: torch eager fp32, dataset order, batches of 32, each padded to its longest row.

    python -m stages.bench.naive --model-dir models/model --dataset data/demo.parquet --out /tmp/naive

Run by `stages.bench.end_to_end` in its own process (so its memory is its own). Writes each row's
label ids (content tokens only) to `labels.parquet` and its timing and peak memory to `report.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import AutoTokenizer

from stages.core.memory import peak_rss_mb
from stages.core.runner import run_stage
from stages.model.directory import load_model_dir

READERS = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".jsonl": lambda path: pd.read_json(path, lines=True)}


def read_texts(dataset: Path, text_column: str) -> list[str]:
    """The texts as a user reads them: pandas, missing values as empty text."""
    return [text if isinstance(text, str) else "" for text in READERS[dataset.suffix](dataset)[text_column]]


def label_rows(
    model_dir: Path, dataset: Path, text_column: str, batch_size: int, max_length: int
) -> tuple[list, float]:
    """Each row's predicted label ids over its content tokens, scored in dataset order, and the seconds from
    reading the dataset to the last batch (loading the model is not counted, as in `infer`'s metrics)."""
    model, spec = load_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    started = time.perf_counter()
    texts = read_texts(dataset, text_column)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
            inputs = {name: batch[name] for name in spec.input_names if name in batch}
            labels = model(**inputs).argmax(dim=-1)
            content = (batch["attention_mask"] == 1) & (batch["special_tokens_mask"] == 0)
            rows.extend(labels[row][content[row]].tolist() for row in range(len(labels)))
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, seconds = label_rows(args.model_dir, args.dataset, args.text_column, args.batch_size, args.max_length)
    args.out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"label_ids": pa.array(rows, pa.list_(pa.int16()))}), args.out / "labels.parquet")
    report = {"rows": len(rows), "seconds": round(seconds, 3), "peak_rss_mb": peak_rss_mb(), "threads": args.threads}
    (args.out / "report.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    run_stage(main)
