"""`infer.output` as one Parquet file or as a directory of part files committed by `_SUCCESS`."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from stages import infer
from stages.core.errors import UserError
from stages.scoring.storage import output as output_module
from stages.scoring.storage.locations import Location
from tests.test_scale import prepared


def test_a_directory_output_is_the_part_files_readable_as_one_dataset(make_workspace):
    prepared(make_workspace, rows=40, block_rows=8)
    infer.main()
    reference = pq.read_table("out/predictions.parquet")
    workspace = prepared(make_workspace, rows=40, block_rows=8, output="out/dataset")
    infer.main()
    names = sorted(path.name for path in Path("out/dataset").iterdir())
    blocks = json.loads(Path(workspace.params["infer"]["details"]).read_text())["blocks"]
    assert blocks > 1 and names == [
        "_SUCCESS",
        "_manifest.json",
        *(f"part-{index:06d}.parquet" for index in range(blocks)),
    ]
    assert ds.dataset("out/dataset", format="parquet").to_table().equals(reference)  # parts in block order
    manifest = json.loads(Path("out/dataset/_manifest.json").read_text())
    assert manifest["rows"] == 44 and sum(file["rows"] for file in manifest["files"]) == 44
    assert not Path("out/dataset.parts").exists()
    assert json.loads(Path(workspace.params["infer"]["details"]).read_text())["duplicate_ids"] == 0


def test_a_run_that_dies_while_publishing_leaves_no_success_marker_and_resumes(make_workspace, monkeypatch):
    prepared(make_workspace, rows=40, block_rows=8, output="out/dataset")
    infer.main()
    reference = ds.dataset("out/dataset", format="parquet").to_table()
    real_move = Location.move_to
    moves = {"count": 0}

    def move_then_die(self: Location, target: Location) -> None:
        moves["count"] += 1
        if moves["count"] > 2:
            raise UserError("the machine went away")
        real_move(self, target)

    monkeypatch.setattr(Location, "move_to", move_then_die)
    with pytest.raises(UserError, match="went away"):
        infer.main()
    assert not Path("out/dataset/_SUCCESS").exists(), "a dataset being published must not look complete"
    monkeypatch.setattr(Location, "move_to", real_move)
    infer.main()
    assert Path("out/dataset/_SUCCESS").is_file()
    assert ds.dataset("out/dataset", format="parquet").to_table().equals(reference)


def test_a_directory_output_never_deletes_files_it_did_not_write(make_workspace):
    prepared(make_workspace, rows=40, block_rows=8, output="out/dataset")
    Path("out/dataset").mkdir(parents=True)
    Path("out/dataset/notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"out/dataset is a directory holding other files \(notes\.txt\)"):
        infer.main()
    assert Path("out/dataset/notes.txt").read_text() == "keep me"


def test_an_output_name_with_another_suffix_says_what_is_accepted(make_workspace):
    prepared(make_workspace, rows=40, output="out/predictions.csv")
    with pytest.raises(UserError, match=r"must end in \.parquet \(one file\) or name a directory"):
        infer.main()


@pytest.mark.parametrize("failing", ["write_table", "close"])
def test_a_one_file_output_that_cannot_be_written_mid_run_is_exit_2_and_the_rerun_gives_the_same_bytes(
    make_workspace, monkeypatch, failing
):
    prepared(make_workspace, rows=40, block_rows=8)
    infer.main()
    reference = Path("out/predictions.parquet").read_bytes()
    Path("out/predictions.parquet").unlink()
    real_writer = output_module.predictions_writer

    class FillingDisk:
        """The output's writer, on a disk that fills after two blocks (`write_table`) or at the footer (`close`)."""

        def __init__(self, file: Location, schema) -> None:
            self.writer, self.tables = real_writer(file, schema), 0

        def write_table(self, table) -> None:
            self.tables += 1
            if failing == "write_table" and self.tables > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.writer.write_table(table)

        def close(self) -> None:
            self.writer.close()
            if failing == "close":
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output_module, "predictions_writer", FillingDisk)
    with pytest.raises(UserError, match=r"cannot write out/predictions\.parquet: .*No space left on device"):
        infer.main()
    assert sorted(path.name for path in Path("out").iterdir()) == [".score-store", "predictions.parquet.parts"], (
        "no output"
    )
    monkeypatch.setattr(output_module, "predictions_writer", real_writer)
    infer.main()
    assert Path("out/predictions.parquet").read_bytes() == reference
    assert json.loads(Path("metrics/infer_details.json").read_text())["resumed_blocks"] > 2, "finished parts were kept"
