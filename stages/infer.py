"""Stage `infer`: score a text dataset with the ONNX model, at dataset scale, resumably.

Engine `local` scores in this process (`stages.scoring.local_engine`); engine `ray` runs the same
scoring on a Ray Data actor pool (`stages.scoring.cluster.engine`). Both write the same file and metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages.core.atomic import write_json
from stages.core.declared import load_declared
from stages.core.errors import UserError
from stages.core.params import Params
from stages.core.runner import run_stage
from stages.scoring.local_engine import score_locally
from stages.scoring.metrics import quality_plots, summary_of, warn_about_data

log = logging.getLogger(__name__)

PARAMS = (
    "export.output",
    "runtime",
    "parity.verdict",
    "infer",
    "annotations",
)  # what this stage reads, as its params in dvc.yaml


def score_on_ray(params: Params) -> dict:
    """Engine `ray`, imported only when asked for: Ray is an optional extra."""
    try:
        from stages.scoring.cluster.engine import score_with_ray as score
    except ModuleNotFoundError as error:
        if error.name != "ray":
            raise
        raise UserError(
            "infer.engine = ray needs Ray Data: pip install -e '.[ray]', or set infer.engine: local"
        ) from None
    return score(params)


def run_summary(metrics: dict) -> str:
    """What the run did, in one line: rows, tokens, the rate of the rows it scored (or that it scored none), quality."""
    rows = (
        f"{metrics['rows']} rows ({metrics['skipped']} skipped), {metrics['tokens']} tokens in {metrics['seconds']} s"
    )
    if metrics["scored_rows"]:
        summary = f"{rows}: {metrics['texts_per_s']} texts/s, padding {metrics['padding_ratio']:.1%}"
    else:  # no rate: the model scored nothing in this run
        sources = [
            f"{count} from {source}"
            for count, source in (
                (metrics["reused_rows"], "the score store"),
                (metrics["resumed_rows"], "finished parts"),
            )
            if count
        ]
        summary = f"{rows}: all {metrics['rows']} rows reused ({' and '.join(sources)})" if sources else f"{rows}: none"
    summary += f", {metrics['provider']}"
    if "entity_f1" in metrics:
        summary += (
            f", against the gold of {metrics['gold_rows']} rows: entity F1 {metrics['entity_f1']:.4f} "
            f"({metrics['entity_level']}-level), token accuracy {metrics['token_accuracy']:.4f}"
        )
        if metrics["truncated_rows"]:
            summary += (
                f" ({metrics['cut_gold_spans']} gold spans in the cut text of {metrics['truncated_rows']} truncated "
                "rows count as misses)"
            )
    return summary


def main() -> None:
    params = load_declared(PARAMS)
    metrics = score_on_ray(params) if params.infer.engine == "ray" else score_locally(params)
    write_json(Path(params.infer.details), metrics)
    write_json(Path(params.infer.metrics), summary_of(metrics))
    for name, rows in quality_plots(metrics).items():
        write_json(Path(params.infer.plots) / name, rows)
    warn_about_data(metrics, log)
    log.info("wrote %s: %s", params.infer.output, run_summary(metrics))
    if (store := metrics["store"]) is not None:
        log.info(
            "reused %d rows from the score store %s (model %s: %d blocks, %d rows stored), scored %d, resumed %d",
            metrics["reused_rows"], store["location"], store["model"], store["blocks"], store["rows"],
            metrics["scored_rows"], metrics["resumed_rows"],
        )  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
