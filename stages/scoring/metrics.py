"""What scoring counts: per-block tallies that add up, and `metrics/infer.json` built from them."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stages.core.cpu import describe_cpu
from stages.scoring.aggregation import SIMPLE
from stages.scoring.quality import EntityCounts, entity_scores


@dataclass
class Tally:
    """Totals over scored blocks, for `metrics/infer.json`; blocks' tallies add up."""

    blocks: int = 0
    resumed_blocks: int = 0  # blocks whose part file a rerun found finished, so they were not scored again
    resumed_rows: int = 0
    resumed_tokens: int = 0
    rows: int = 0
    reused_rows: int = 0  # rows of the blocks scored whose scores the store held (same model, same batch context)
    reused_tokens: int = 0
    skipped: int = 0
    tokens: int = 0
    model_tokens: int = 0  # tokens of the batches the model ran (special tokens included, padding not)
    token_slots: int = 0
    windows: int = 0
    truncated_rows: int = 0
    cut_gold_spans: int = 0  # gold spans in the cut text of truncated rows: counted as misses
    model_seconds: float = 0.0
    text_issues: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    entities: EntityCounts = field(default_factory=EntityCounts)  # against gold annotations, where rows have them

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Tally:
        """A tally from its JSON form (`dataclasses.asdict`)."""
        return cls(**{**record, "entities": EntityCounts(**record["entities"])})

    def resumed(self) -> Tally:
        """This tally of a finished part a rerun found: its rows count as resumed, none as reused or scored."""
        self.resumed_blocks, self.resumed_rows, self.resumed_tokens = 1, self.rows, self.tokens
        self.reused_rows = self.reused_tokens = 0
        return self

    def stored(self) -> Tally:
        """This tally of a block the store held whole: every row reused, nothing run through the model."""
        self.reused_rows, self.reused_tokens = self.rows, self.tokens
        self.windows = self.token_slots = self.model_tokens = 0
        self.model_seconds = 0.0
        return self

    def add(self, other: Tally) -> None:
        for name, value in vars(other).items():
            if isinstance(value, EntityCounts):
                self.entities.add(value)
            elif isinstance(value, dict):
                merged = Counter(getattr(self, name))
                merged.update(value)
                setattr(self, name, dict(sorted(merged.items())))
            else:
                setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class Recovery:
    """What a run recovered from: damaged parts scored again and, under Ray, lost nodes, actor restarts and blocks
    that were scored (and their part written) more than once."""

    rescored_blocks: int = 0
    lost_nodes: tuple[str, ...] = ()
    actor_restarts: int = 0
    blocks_scored_more_than_once: int = 0


def build_metrics(
    tally: Tally,
    seconds: float,
    *,
    engine: str,
    provider: str,
    threads: int,
    peak_rss_mb: float,
    duplicate_ids: int,
    rows_per_node: dict[str, int],
    recovery: Recovery,
    store: dict | None,
    aggregation: str,
) -> dict:
    """`metrics/infer.json`, the same keys for every engine: volumes, padding, throughput (of the rows scored in
    this run; a rerun skips finished blocks), engine, provider, the CPU that scored (local engine; on Ray each node
    has its own), onnxruntime threads (all sessions together), rows
    scored on each machine, what the run recovered from, peak memory (of the largest process), and, where the rows
    have gold annotations, entity precision, recall and F1 (on words under a word-level `aggregation`) and token
    accuracy.
    """
    scored = tally.rows - tally.resumed_rows - tally.reused_rows
    scored_tokens = tally.tokens - tally.resumed_tokens - tally.reused_tokens
    metrics = {
        "rows": tally.rows,
        "scored_rows": scored,
        "reused_rows": tally.reused_rows,
        "store": store,
        "blocks": tally.blocks,
        "resumed_blocks": tally.resumed_blocks,
        "resumed_rows": tally.resumed_rows,
        "rescored_blocks": recovery.rescored_blocks,
        "duplicate_ids": duplicate_ids,
        "skipped": tally.skipped,
        "text_issues": tally.text_issues,
        "tokens": tally.tokens,
        "windows": tally.windows,
        "truncated_rows": tally.truncated_rows,
        "cut_gold_spans": tally.cut_gold_spans,
        "padding_ratio": round(1 - tally.model_tokens / tally.token_slots, 4) if tally.token_slots else 0.0,
        "seconds": round(seconds, 3),
        "model_seconds": round(tally.model_seconds, 3),
        "texts_per_s": round(scored / seconds, 2),
        "tokens_per_s": round(scored_tokens / seconds, 1),
        "engine": engine,
        "provider": provider,
        "cpu": describe_cpu() if engine == "local" else None,
        "threads": threads,
        "rows_per_node": dict(sorted(rows_per_node.items())),
        "lost_nodes": list(recovery.lost_nodes),
        "actor_restarts": recovery.actor_restarts,
        "blocks_scored_more_than_once": recovery.blocks_scored_more_than_once,
        "peak_rss_mb": peak_rss_mb,
        "label_counts": tally.label_counts,
    }
    if tally.entities.rows:
        metrics.update(quality_metrics(tally.entities, aggregation))
    return metrics


def quality_metrics(counts: EntityCounts, aggregation: str) -> dict:
    """Entity F1, precision and recall (micro), token accuracy, and the per-label table, against gold annotations;
    which spans were counted: `entity_level` `word` (spans of words, under a word-level `aggregation`) or `token`."""
    scores = entity_scores(counts)
    return {
        "entity_level": "token" if aggregation == SIMPLE else "word",
        "aggregation": aggregation,
        "entity_f1": round(scores["micro"]["f1"], 5),
        "entity_precision": round(scores["micro"]["precision"], 5),
        "entity_recall": round(scores["micro"]["recall"], 5),
        "token_accuracy": round(counts.token_accuracy, 5),
        "gold_rows": counts.rows,
        "entities": rounded(scores),
        "token_confusion": counts.confusion,
    }


def rounded(scores: dict) -> dict:
    """Scores to 5 decimals, supports as they are."""
    return {
        key: rounded(value) if isinstance(value, dict) else value if isinstance(value, int) else round(value, 5)
        for key, value in scores.items()
    }


def quality_plots(metrics: dict) -> dict[str, list[dict]]:
    """For `dvc plots`: tokens per (gold, predicted) type, and entity F1 per label then micro and macro; empty
    lists where the rows have no gold annotations."""
    confusion = [
        {"gold": gold, "predicted": predicted, "tokens": tokens}
        for pair, tokens in metrics.get("token_confusion", {}).items()
        for gold, predicted in [pair.split("|")]
    ]
    scores = metrics.get("entities", {})
    f1 = [{"label": label, "f1": values["f1"]} for label, values in scores.get("per_label", {}).items()]
    f1 += [
        {"label": f"({average})", "f1": scores[average]["f1"]} for average in ("micro", "macro") if average in scores
    ]
    return {"confusion.json": confusion, "entity_f1.json": f1}


SUMMARY_KEYS = (
    "verified",
    "rows",
    "scored_rows",
    "reused_rows",
    "seconds",
    "texts_per_s",
    "padding_ratio",
    "peak_rss_mb",
    "entity_level",
    "entity_f1",
    "token_accuracy",
    "truncated_rows",
    "cut_gold_spans",
)


def summary_of(metrics: dict) -> dict:
    """The few numbers `dvc exp show` lists per run (`infer.metrics`); the rest are in `infer.details`."""
    return {key: metrics[key] for key in SUMMARY_KEYS if key in metrics}


def warn_about_data(metrics: dict, log: logging.Logger) -> None:
    """Say what the dataset's rows had wrong that scoring carried on through (per `infer.bad_rows`)."""
    if metrics["duplicate_ids"]:
        log.warning(
            "%d rows share their id with an earlier row; every row is kept in input order, "
            "but make ids unique before joining predictions back on them",
            metrics["duplicate_ids"],
        )
    if invalid := metrics["text_issues"].get("invalid_utf8"):
        log.warning(
            "%d texts are not valid UTF-8 and were read with U+FFFD in place of the bad bytes; "
            "if the dataset is in another encoding, write it as UTF-8",
            invalid,
        )
