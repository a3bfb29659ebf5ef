"""Part files: each scored block saved as it finishes, so a run killed at any moment resumes where it stopped.

The parts of one run live in `<output>.parts/` with a manifest holding the run's fingerprint (input,
model and the params that shape outputs); parts from another fingerprint are discarded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stages.core.atomic import atomic_path, ensure_directory, write_json
from stages.core.params import Params
from stages.graph.metadata import ONNX_FILE, SIDECAR_FILE
from stages.scoring.dataset import open_dataset
from stages.scoring.metrics import Tally

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Params that do not change what is written: where it goes, and how the ray engine spreads the work.
NEUTRAL_INFER_PARAMS = ("output", "metrics", "engine", "ray_actors", "ray_cpus_per_actor", "ray_gpus_per_actor")


def fingerprint(params: Params) -> str:
    """What the parts depend on: the input file, the exported model, and the params that shape outputs."""
    source = open_dataset(params.infer.input)
    info = source.info()
    onnx_dir = Path(params.export.output)
    scoring = {key: value for key, value in asdict(params.infer).items() if key not in NEUTRAL_INFER_PARAMS}
    identity = {
        "input": [type(source.filesystem).__name__, source.path, info.size, info.mtime_ns],
        "model": (onnx_dir / SIDECAR_FILE).read_text(encoding="utf-8"),
        "model_files": [
            [path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in sorted(onnx_dir.glob(f"{ONNX_FILE}*"))
        ],
        "infer": scoring,
        "providers": list(params.runtime.providers),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class PartFiles:
    """The finished blocks of one run, kept in `<output>.parts/` until the output file is complete."""

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
        return self.directory / f"part-{index:06d}.parquet"

    def finished(self, index: int) -> Tally | None:
        """The tally of a finished block, or None."""
        if not self.path(index).is_file():
            return None
        return Tally(**json.loads(self.path(index).with_suffix(".json").read_text()))

    def save(self, index: int, table: pa.Table, tally: Tally) -> None:
        """Write the tally, then the part: a part file exists only once both are complete."""
        write_json(self.path(index).with_suffix(".json"), asdict(tally))
        with atomic_path(self.path(index)) as temporary:
            pq.write_table(table, temporary, compression="zstd")

    def tables(self) -> Iterator[pa.Table]:
        """The finished parts, in block order."""
        for path in sorted(self.directory.glob("part-*.parquet")):
            yield pq.read_table(path)

    def remove(self) -> None:
        shutil.rmtree(self.directory)
