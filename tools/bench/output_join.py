"""What the single-file output's join pass costs against a directory of part files, at dataset scale.

    python -m tools.bench.output_join --rows 1000000

Scores the demo dataset once with the exported model (`export.output`, `params.yaml`'s infer params),
repeats its scored blocks (ids made unique) into part files (Arrow IPC) for `--rows` rows, then finishes
the same parts both ways, each in its own process under `/usr/bin/time -v`: joined into one `.parquet` file,
and published as a directory (one Parquet file per part, manifest, `_SUCCESS`). Either way every row is
read from its part and encoded as Parquet once: this is the Ray driver's finish, and what the local engine
does in a background thread while it scores (then a directory output's files are only moved at the end).
Scoring's time at the measured rate is printed beside them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from stages.core.params import load_params
from stages.core.runner import run_stage
from stages.scoring.datasets.blocks import iter_blocks
from stages.scoring.metrics import Tally
from stages.scoring.score import score_rows
from stages.scoring.served import ServedModel
from stages.scoring.storage.locations import locate
from stages.scoring.storage.output import finish_output, output_location
from stages.scoring.storage.parts import PartFiles, encode_part
from tools.cli import option, parse

TIME_FIELDS = {"wall": r"Elapsed \(wall clock\) time.*: (.+)", "max_rss_kb": r"Maximum resident set size.*: (\d+)"}


def scored_demo_blocks() -> tuple[list[pa.Table], float]:
    """The demo dataset's blocks, scored; and the rows per second scoring them took."""
    params = load_params()
    served = ServedModel.load(Path(params.export.output), params.runtime)
    infer = params.infer
    started, tables = time.perf_counter(), []
    for block in iter_blocks(infer.input, infer.text_column, infer.id_column, infer.block_rows):
        tables.append(score_rows(served, block, infer)[0])
    rows = sum(table.num_rows for table in tables)
    return tables, rows / (time.perf_counter() - started)


def write_parts(tables: list[pa.Table], rows: int, directory: Path) -> int:
    """Part files holding `rows` rows: the scored blocks over and over, each id suffixed with its repetition."""
    parts = PartFiles.for_run(locate(str(directory)), "output-join-benchmark", {"verified": False})
    written, index = 0, 0
    while written < rows:
        table = tables[index % len(tables)]
        table = table.slice(0, min(table.num_rows, rows - written))
        ids = pc.binary_join_element_wise(pc.cast(table.column("id"), pa.string()), f"#{index}", "")
        table = table.set_column(0, "id", ids)
        parts.save(index, encode_part(table), Tally(blocks=1, rows=table.num_rows))
        written, index = written + table.num_rows, index + 1
    return index


def finish(parts: str, output: str) -> None:
    """One finish, timed by the caller: the parts at `parts` into `output` (a file, or a directory)."""
    finish_output(PartFiles(locate(parts)), output_location(output), "the benchmark's parts")


def timed_finish(parts: Path, output: Path) -> dict:
    """`finish` in a fresh process under /usr/bin/time -v: wall seconds and peak RSS."""
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "tools.bench.output_join",
        "--finish",
        str(parts),
        str(output),
    ]
    report = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    found = {name: re.search(pattern, report).group(1) for name, pattern in TIME_FIELDS.items()}
    minutes, _, seconds = found["wall"].rpartition(":")
    size = sum(path.stat().st_size for path in output.rglob("*")) if output.is_dir() else output.stat().st_size
    wall = float(minutes or 0) * 60 + float(seconds)
    return {"seconds": wall, "peak_rss_mb": int(found["max_rss_kb"]) / 1024, "mb": size / 2**20}


@dataclass(frozen=True)
class OutputJoin:
    """The output benchmark's settings."""

    rows: int = option(1_000_000, "rows of the part files finished both ways")
    finish: tuple[str, ...] | None = option(
        None, "PARTS OUTPUT: finish these parts into OUTPUT (each timed child runs this)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(OutputJoin, argv, __doc__)
    if args.finish:
        finish(*args.finish)
        return
    tables, rate = scored_demo_blocks()
    work = Path(tempfile.mkdtemp(prefix="output-join-"))
    try:
        blocks = write_parts(tables, args.rows, work / "joined.parquet.parts")
        shutil.copytree(work / "joined.parquet.parts", work / "dataset.parts")
        results = {
            "one file (join pass)": timed_finish(work / "joined.parquet.parts", work / "joined.parquet"),
            "directory of parts": timed_finish(work / "dataset.parts", work / "dataset"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{args.rows} rows in {blocks} parts; scoring them at the measured {rate:.0f} rows/s: {args.rows / rate:.0f} s"
    )
    for name, result in results.items():
        print(
            f"{name:22s} finish {result['seconds']:7.2f} s  peak RSS {result['peak_rss_mb']:7.1f} MB  "
            f"output {result['mb']:7.1f} MB  ({result['seconds'] / (args.rows / rate):.1%} of scoring time)"
        )


if __name__ == "__main__":
    run_stage(main)
