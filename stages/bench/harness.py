"""Timing variants side by side: the same rows in fixed batches, end to end, in alternating rounds.

Each timed round tokenises its rows (fixed batches of `batch` rows in dataset order, truncated to
`length` tokens, right-padded) and runs the model. Variants alternate round by round after warm-up
rounds, so load from other processes falls on all of them alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stages.bench.flops import flops_per_slot
from stages.bench.variants import Variant
from stages.core.errors import UserError
from stages.core.memory import rss_mb
from stages.core.params import ExportParams, RuntimeParams
from stages.model.custom_head import TokenModel
from stages.scoring.batching import pad_batch
from stages.scoring.datasets.blocks import iter_blocks
from stages.scoring.tokens import Framing, TextTokenizer
from stages.scoring.windows import make_windows

log = logging.getLogger(__name__)

READ_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class BenchmarkSettings:
    """What is measured: rows, batch shape, rounds and threads."""

    size: str
    rows: int
    batch: int
    length: int
    rounds: int
    warmup: int
    threads: int
    truncation_side: str  # which end of a long text is kept (model.truncation_side)
    runtime: RuntimeParams  # params.yaml's onnxruntime settings, on the CPU with `threads`
    export: ExportParams  # how the model under test is exported (params.yaml's export section)
    tmp_dir: str | None = None  # where the ONNX models are written (None: the system's temporary directory)


@dataclass(frozen=True)
class Workload:
    """The rows cut into fixed batches, with what one round computes."""

    batches: list[list[str]]
    padded_lengths: list[int]
    real_tokens: int  # per round, special tokens included
    token_slots: int  # per round, padding included
    flops: float  # per round, over padded slots


@dataclass
class VariantTimings:
    """What a variant's timed rounds measured."""

    batch_seconds: list[float] = field(default_factory=list)  # end to end, tokenisation included
    model_seconds: float = 0.0
    tokenize_seconds: float = 0.0
    rounds: int = 0
    peak_rss_mb: float = 0.0
    labels: np.ndarray | None = None  # argmax over real tokens, from the last round


def read_texts(dataset: str, text_column: str, id_column: str, rows: int) -> list[str]:
    """The first `rows` non-empty texts of the dataset, in dataset order."""
    texts: list[str] = []
    for block in iter_blocks(dataset, text_column, id_column, READ_BLOCK_ROWS):
        texts.extend(text for text in block.texts if text.strip())
        if len(texts) >= rows:
            return texts[:rows]
    if not texts:
        raise UserError(f"dataset {dataset} has no non-empty texts to benchmark on (parity.input)")
    log.warning("dataset %s has only %d non-empty texts; benchmarking on those", dataset, len(texts))
    return texts


def tokenize_batch(tokenizer: TextTokenizer, framing: Framing, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Tokenise, truncate to one window and right-pad: what every variant's round does per batch."""
    windows = make_windows(tokenizer.encode(texts), framing, "truncate", 0)
    return pad_batch([window.input_ids for window in windows], tokenizer.pad_id)


def plan_workload(
    texts: list[str], tokenizer: TextTokenizer, framing: Framing, model: TokenModel, batch: int
) -> Workload:
    """Fixed batches of `batch` rows in dataset order, and their token and FLOP counts."""
    batches = [texts[start : start + batch] for start in range(0, len(texts), batch)]
    lengths, real, slots, flops, largest_id = [], 0, 0, 0.0, 0
    for rows in batches:
        arrays = tokenize_batch(tokenizer, framing, rows)
        mask = arrays["attention_mask"]
        lengths.append(mask.shape[1])
        real += int(mask.sum())
        slots += mask.size
        flops += mask.size * flops_per_slot(model.config, model.num_labels, mask.shape[1])
        largest_id = max(largest_id, int(arrays["input_ids"].max()))
    if largest_id >= model.config.vocab_size:
        raise UserError(
            f"the tokenizer produces token id {largest_id}, beyond the model's vocabulary of {model.config.vocab_size}; "
            "use the backbone's own tokenizer"
        )
    return Workload(batches, lengths, real, slots, flops)


def time_round(
    variant: Variant, workload: Workload, tokenizer: TextTokenizer, framing: Framing, timings: VariantTimings
) -> None:
    """One end-to-end round: tokenise and run every batch; adds to `timings`."""
    labels = []
    for rows in workload.batches:
        started = time.perf_counter()
        arrays = tokenize_batch(tokenizer, framing, rows)
        tokenized = time.perf_counter()
        logits = variant.run(arrays)
        finished = time.perf_counter()
        timings.batch_seconds.append(finished - started)
        timings.tokenize_seconds += tokenized - started
        timings.model_seconds += finished - tokenized
        labels.append(logits.argmax(axis=-1)[arrays["attention_mask"].astype(bool)])
    timings.rounds += 1
    timings.labels = np.concatenate(labels)
    timings.peak_rss_mb = max(timings.peak_rss_mb, rss_mb())


def time_engines(
    variants: list[Variant],
    workload: Workload,
    tokenizer: TextTokenizer,
    framing: Framing,
    settings: BenchmarkSettings,
) -> dict[str, VariantTimings]:
    """Warm-up rounds, then timed rounds alternating between variants (each round starts one variant later)."""
    for variant in variants:
        for _ in range(settings.warmup):
            time_round(variant, workload, tokenizer, framing, VariantTimings())
    timings = {variant.name: VariantTimings() for variant in variants}
    for round_index in range(settings.rounds):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            time_round(variant, workload, tokenizer, framing, timings[variant.name])
        log.info("round %d/%d done", round_index + 1, settings.rounds)
    return timings
