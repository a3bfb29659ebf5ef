"""What the score store holds, per model, and dropping the entries of models that are no longer current.

    python -m tools.score_store            # prints one line per model: blocks, rows, MB, and which one is current
    python -m tools.score_store --prune    # deletes every model's entries but the current one's, then prints

The store is `infer.store` (or `.score-store` beside `infer.output`); the current model is the one
`export.output` and the output-shaping params of params.yaml name (docs/reuse.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.fs as pafs

from stages.core.params import load_params
from stages.scoring.reuse.keys import model_key
from stages.scoring.reuse.store import RECORD_SUFFIX, store_location
from tools.cli import option, parse


@dataclass(frozen=True)
class ScoreStoreSettings:
    """The command's settings."""

    prune: bool = option(False, "delete the entries of every model but the current one")


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(ScoreStoreSettings, argv, __doc__)
    params = load_params()
    root, current = store_location(params), model_key(params)
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
    main()
