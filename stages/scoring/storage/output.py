"""The predictions: their schema, and where the scored parts end up, complete or not at all.

`infer.output` ending in `.parquet` is one file, written from the parts in input order and made
visible at once (a rename, or an object store's whole-object copy). Any other name is a directory:
a Parquet dataset of the part files themselves (no second pass over the data), with `_manifest.json`
and then `_SUCCESS` written last. Readers of part-file datasets (pyarrow.dataset, DuckDB, Spark, Ray
Data) skip names starting with `_`; `_SUCCESS` is the commit marker, as Hadoop and Spark write it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stages.core.errors import UserError
from stages.scoring.datasets.blocks import empty_dataset
from stages.scoring.storage.lease import FileLease
from stages.scoring.storage.locations import Location, atomic_file, locate, storage_error
from stages.scoring.storage.object_lease import ObjectLease, object_lease
from stages.scoring.storage.parts import MANIFEST, PART_PREFIX, PartFiles

Lease = FileLease | ObjectLease  # one writer per output: flock on a local disk, a conditional put on a store
SUCCESS = "_SUCCESS"
DATASET_MANIFEST = "_manifest.json"


def release_freed_memory() -> None:
    """Arrow buffers from the system allocator: the default (mimalloc) keeps freed pages, and a long scoring run's
    RSS then varies by hundreds of MB between identical runs."""
    pa.set_memory_pool(pa.system_memory_pool())


def output_location(name: str) -> Location:
    """Where `infer.output` points: a `.parquet` file, or a directory for a dataset of part files."""
    output = locate(name)
    if output.suffix not in ("", ".parquet"):
        raise UserError(
            f"infer.output = {name} must end in .parquet (one file) or name a directory without a suffix "
            "(a Parquet dataset of part files)"
        )
    if not output.suffix and output.info().type == pafs.FileType.File:
        raise UserError(f"infer.output = {name} is a file; name a directory, or a .parquet file")
    return output


@contextmanager
def hold_output(output: Location) -> Iterator[Lease]:
    """This run's lease on `output` while the block runs, released however it ends: one run per output."""
    lease = FileLease(output) if output.is_local else object_lease(output)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


def is_dataset_directory(output: Location) -> bool:
    return output.suffix != ".parquet"


def finish_output(parts: PartFiles, output: Location, source: str) -> None:
    """Turn the finished parts into `output` (joined into one file, or published as a directory), then drop them.

    No parts at all means the dataset `source` has no rows: a `UserError`, and no output.
    """
    if not parts.indices():
        raise empty_dataset(source)
    if is_dataset_directory(output):
        publish_parts(parts, output)
    else:
        write_predictions(parts.tables(), output)
    parts.remove()


def write_predictions(tables: Iterable[pa.Table], output: Location) -> None:
    """Write the scored blocks, in order, into one file; it appears only when all are written."""
    with atomic_file(output) as temporary:
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(
                        temporary.path, table.schema, filesystem=temporary.filesystem, compression="zstd"
                    )
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


def publish_parts(parts: PartFiles, output: Location) -> None:
    """Move the part files into the directory `output`, then write its manifest, then `_SUCCESS`."""
    clear_dataset_directory(output)
    files = []
    for index in parts.indices():
        part = parts.part(index)
        part.move_to(output.child(part.base_name))
        files.append({"name": part.base_name, "rows": parts.recorded(index).rows})
    manifest = {"format": "parquet", "rows": sum(file["rows"] for file in files), "files": files}
    manifest["fingerprint"] = json.loads(parts.directory.child(MANIFEST).read_text())["fingerprint"]
    output.child(DATASET_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    output.child(SUCCESS).write_text("")


def clear_dataset_directory(output: Location) -> None:
    """Empty the directory of a previous run's dataset, its `_SUCCESS` first; refuse to touch anything else."""
    ours = {SUCCESS, DATASET_MANIFEST}
    entries = output.entries()
    foreign = sorted(
        entry.base_name
        for entry in entries
        if entry.type != pafs.FileType.File
        or not (entry.base_name in ours or (entry.base_name.startswith(PART_PREFIX) and entry.extension == "parquet"))
    )
    if foreign:
        raise UserError(
            f"infer.output = {output.name} is a directory holding other files ({', '.join(foreign[:3])}); "
            "point infer.output at a new or empty directory. Nothing was deleted."
        )
    names = sorted((entry.base_name for entry in entries), key=lambda name: name != SUCCESS)
    for name in names:
        output.child(name).delete()
    output.make_directory()


def count_duplicate_ids(output: Location) -> int:
    """Rows of the written predictions whose id an earlier row already has (only the id column is read)."""
    try:
        ids = pq.read_table(output.path, columns=["id"], filesystem=output.filesystem).column("id")
    except (OSError, pa.ArrowException) as error:
        raise storage_error(output, error) from None
    return len(ids) - pc.count_distinct(ids).as_py()
