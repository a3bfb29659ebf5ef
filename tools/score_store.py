"""What the score store holds, per model, and dropping the entries of models that are no longer current.

    python -m tools.score_store            # prints one line per model: blocks, rows, MB, and which one is current
    python -m tools.score_store --prune    # deletes every model's entries but the current one's, then prints

The store is `infer.store` (or `.score-store` beside `infer.output`); the current model is the one
`export.output` and the output-shaping params of params.yaml name, served as `infer` would serve it on this machine
(the served identity is part of the key: docs/reuse.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from stages.core.params import load_params
from stages.core.runner import run_stage
from stages.graph.verdict import model_digests
from stages.scoring.reuse.keys import model_key
from stages.scoring.reuse.store import RECORD_SUFFIX, store_location
from stages.scoring.served import ServedModel
from tools.cli import option, parse


@dataclass(frozen=True)
class ScoreStoreSettings:
    """The command's settings."""

    prune: bool = option(False, "delete the entries of every model but the current one")


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(ScoreStoreSettings, argv, __doc__)
    params = load_params()
    onnx_dir = Path(params.export.output)
    served = ServedModel.load(onnx_dir, params.runtime).runner.identity  # what infer would serve it as, here
    root, current = store_location(params), model_key(params, served, model_digests(onnx_dir))
    models = [info.base_name for info in root.entries() if info.type == pafs.FileType.Directory]
    for model in sorted(models):
        directory = root.child(model)
        if settings.prune and model != current:
            directory.delete()
            print(f"{model[:16]}  deleted")
            continue
        records = [
            json.loads(record.read_bytes()) for record in directory.files() if record.base_name.endswith(RECORD_SUFFIX)
        ]
        rows = sum(record["tally"]["rows"] for record in records)
        stored = sum(record["part"]["bytes"] + record["rows"]["bytes"] for record in records)
        mark = "  (current)" if model == current else ""
        print(f"{model[:16]}  {len(records)} blocks, {rows} rows, {stored / 1e6:.1f} MB{mark}")
    if not models:
        print(f"{root.name}: empty")


if __name__ == "__main__":
    run_stage(main)
