"""`infer.output` as one Parquet file or as a directory of part files committed by `_SUCCESS`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from stages import infer
from stages.core.errors import UserError
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
