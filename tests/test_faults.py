"""Faults: full disks, unwritable outputs and corrupted models give clear errors and lose nothing."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from stages import export, infer, load_checkpoint, parity
from stages.core.errors import UserError
from stages.scoring import parts as parts_module


@pytest.fixture
def exported(make_workspace):
    workspace = make_workspace("deberta-v2", rows=60)
    workspace.write_params(infer={"block_rows": 8})
    load_checkpoint.main()
    export.main()
    return workspace


def test_full_disk_mid_run_is_a_clear_error_and_keeps_finished_parts(exported, monkeypatch):
    real_write = parts_module.pq.write_table
    calls = {"count": 0}

    def write_until_full(table, where, **options):
        calls["count"] += 1
        if calls["count"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(table, where, **options)

    monkeypatch.setattr(parts_module.pq, "write_table", write_until_full)
    with pytest.raises(
        UserError, match=r"cannot write .*part-000003\.parquet: No space left on device; free some space"
    ):
        infer.main()
    parts = Path("out/predictions.parquet.parts")
    assert not Path("out/predictions.parquet").exists()
    assert sorted(path.name for path in parts.glob("part-*.parquet")) == [f"part-00000{i}.parquet" for i in range(3)]
    assert not list(parts.glob(".*tmp")), "no temporary file is left behind"
    monkeypatch.setattr(parts_module.pq, "write_table", real_write)
    infer.main()  # space is back: the run resumes and completes
    assert Path("out/predictions.parquet").is_file() and not parts.exists()


def test_unwritable_output_location_names_it(exported):
    exported.write_params(infer={"output": "params.yaml/predictions.parquet"})
    with pytest.raises(UserError, match=r"cannot write params\.yaml.*choose another output path"):
        infer.main()


@pytest.mark.parametrize("stage", [parity, infer])
def test_corrupted_onnx_model_names_the_file(exported, stage):
    path = Path("models/onnx/model.onnx")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match=r"onnxruntime cannot load models/onnx/model\.onnx: .*export it again"):
        stage.main()


def test_stages_run_out_of_order_say_what_to_run(make_workspace):
    make_workspace("deberta-v2")
    with pytest.raises(UserError, match="run stage load_checkpoint first"):
        export.main()
    with pytest.raises(UserError, match="run `dvc repro`"):
        parity.main()
