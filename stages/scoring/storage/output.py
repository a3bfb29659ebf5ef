"""The predictions: their schema, and where the scored parts end up, complete or not at all.

`infer.output` ending in `.parquet` is one file, written from the parts in input order and made
visible at once (a rename, or an object store's whole-object copy). Any other name is a directory:
a Parquet dataset, one Parquet file per part, with `_manifest.json` and then `_SUCCESS` written last.
Readers of part-file datasets (pyarrow.dataset, DuckDB, Spark, Ray Data) skip names starting with `_`;
`_SUCCESS` is the commit marker, as Hadoop and Spark write it.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stages.core.errors import UserError
from stages.scoring.datasets.blocks import empty_dataset
from stages.scoring.storage.lease import FileLease
from stages.scoring.storage.locations import Location, atomic_file, locate, storage_error
from stages.scoring.storage.object_lease import ObjectLease, object_lease
from stages.scoring.storage.parts import MANIFEST, PART_PREFIX, PartFiles, decode_part

Lease = FileLease | ObjectLease  # one writer per output: flock on a local disk, a conditional put on a store
SUCCESS = "_SUCCESS"
DATASET_MANIFEST = "_manifest.json"
STAGED = "parquet"  # in the parts directory: a directory output's Parquet files, written while the run goes on


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


def finish_output(parts: PartFiles, output: Location, source: str, streamed: bool = False) -> None:
    """Turn the finished parts into `output` (joined into one file unless `streamed_output` wrote it, or published as
    a directory), then drop them.

    No parts at all means the dataset `source` has no rows: a `UserError`, and no output.
    """
    if not parts.indices():
        raise empty_dataset(source)
    if is_dataset_directory(output):
        publish_parts(parts, output, staged=streamed)
    elif not streamed:
        write_predictions(parts.tables(), output)
    parts.remove()


def write_predictions(tables: Iterable[pa.Table], output: Location) -> None:
    """Write the scored blocks, in order, into one file; it appears only when all are written."""
    with atomic_file(output) as temporary:
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = predictions_writer(temporary, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


# Columns of few distinct values, dictionary-encoded; ids, offsets, span texts and scores are not (measured on 202,000
# demo rows: the file 28% smaller than with a dictionary on every column, written 15% faster).
DICTIONARY_COLUMNS = (
    "skipped_reason", "label_ids.list.element", "labels.list.element", "spans.list.element.label",
    "word_labels.list.element",
)  # fmt: skip
# Columns with min/max statistics: the per-row ones a reader filters on. The per-token lists have none (their minima
# and maxima select nothing; on 202,000 demo rows the file is written 13% faster without them).
STATISTICS_COLUMNS = ("id", "n_tokens", "truncated", "skipped_reason")


def predictions_writer(file: Location, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        file.path,
        schema,
        filesystem=file.filesystem,
        compression="zstd",
        use_dictionary=list(DICTIONARY_COLUMNS),
        write_statistics=list(STATISTICS_COLUMNS),
    )


class PartAppender:
    """Finished parts handed, in block order, to a background thread that encodes them as Parquet while the next blocks
    are scored: appended to one file, or (`each_to_a_file`) each written as a file of the directory `target`. A bounded
    queue holds the parts it has not written yet."""

    def __init__(self, target: Location, each_to_a_file: bool = False) -> None:
        self.target = target
        self.each_to_a_file = each_to_a_file
        self.queue: queue.Queue[tuple[int, bytes | pa.Buffer | pa.Table] | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.parts = 0
        self.thread = threading.Thread(target=self.write_all, name="output", daemon=True)
        self.thread.start()

    def append(self, index: int, part: bytes | pa.Buffer | pa.Table) -> None:
        """Queue block `index`'s part (its table, or its part file's bytes) to be written after the ones queued before."""
        self.raise_error()
        self.queue.put((index, part))
        self.parts += 1

    def close(self) -> None:
        """Write what is queued and close the file; a write that failed is raised here."""
        self.stop()
        self.raise_error()

    def stop(self) -> None:
        """Write what is queued and close the file (after an error elsewhere: a failed write is not raised)."""
        self.queue.put(None)
        self.thread.join()

    def raise_error(self) -> None:
        if isinstance(self.error, (OSError, pa.ArrowException)):
            raise storage_error(self.target, self.error, writing=True) from None
        if self.error is not None:
            raise self.error

    def write_all(self) -> None:
        writer, item = None, None
        try:
            while (item := self.queue.get()) is not None:
                index, part = item
                table = part if isinstance(part, pa.Table) else decode_part(part)
                if self.each_to_a_file:
                    write_predictions([table], self.target.child(dataset_file_name(index)))
                    continue
                if writer is None:
                    writer = predictions_writer(self.target, table.schema)
                writer.write_table(table)
            if writer is not None:
                writer, finished = None, writer
                finished.close()  # writes the footer: a file whose close failed must not become the output
        except BaseException as error:  # raised in the scoring thread, at its next append or at close
            self.error = error
            while item is not None:  # keep taking parts, so that the scoring thread never waits on a full queue
                item = self.queue.get()
        finally:
            if writer is not None:  # a write failed: the file is dropped, only its handle is closed
                with suppress(OSError, pa.ArrowException):
                    writer.close()


@contextmanager
def streamed_output(
    output: Location, source: str, parts: PartFiles
) -> Iterator[Callable[[int, bytes | pa.Buffer | pa.Table], None]]:
    """`append(index, part)` for each finished part, in block order, encoded as Parquet while the run goes on. A
    `.parquet` output is written into a temporary file beside it, which becomes `output` when the block ends without
    an error (the same bytes as `finish_output` writes); no part at all is the `UserError` of an empty dataset
    `source`. A directory output's files are staged beside the parts and moved into place when it is published
    (`finish_output(streamed=True)`)."""
    if is_dataset_directory(output):
        staging = parts.directory.child(STAGED)
        staging.make_directory()
        with appending(PartAppender(staging, each_to_a_file=True)) as append:
            yield append
        return
    with atomic_file(output) as temporary:
        appender = PartAppender(temporary)
        with appending(appender) as append:
            yield append
        if not appender.parts:
            raise empty_dataset(source)


@contextmanager
def appending(appender: PartAppender) -> Iterator[Callable[[int, bytes | pa.Buffer | pa.Table], None]]:
    """`appender.append`, and the appender closed when the block ends (stopped without raising if the block failed)."""
    try:
        yield appender.append
    except BaseException:
        appender.stop()
        raise
    appender.close()


def dataset_file_name(index: int) -> str:
    return f"{PART_PREFIX}{index:06d}.parquet"


def publish_parts(parts: PartFiles, output: Location, staged: bool) -> None:
    """Make each part a Parquet file of the directory `output` (moving the file `streamed_output` staged, or encoding
    the part), then write its manifest, then `_SUCCESS`."""
    clear_dataset_directory(output)
    tables = None if staged else parts.tables()
    files = []
    for index in parts.indices():
        file = output.child(dataset_file_name(index))
        if tables is None:
            parts.directory.child(STAGED).child(file.base_name).move_to(file)
        else:
            write_predictions([next(tables)], file)
        files.append({"name": file.base_name, "rows": parts.recorded(index).rows})
    manifest = {"format": "parquet", "rows": sum(file["rows"] for file in files), "files": files}
    recorded = json.loads(parts.directory.child(MANIFEST).read_text())
    manifest.update(fingerprint=recorded["fingerprint"], verification=recorded["verification"])
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
    return duplicate_count(ids)


def duplicate_count(ids: pa.ChunkedArray) -> int:
    """Ids that an earlier one repeats."""
    return len(ids) - pc.count_distinct(ids).as_py()
