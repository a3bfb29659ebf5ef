"""Faults: full disks, unwritable outputs and corrupted models give clear errors and lose nothing."""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stages import export, infer, load_checkpoint, parity
from stages.core.errors import UserError
from stages.core.params import load_params
from stages.scoring.reuse.plan import scoring_blocks
from stages.scoring.score import BlockFailed
from stages.scoring.storage import parts as parts_module
from stages.scoring.storage.parts import PART_SUFFIX, PartFiles
from stages.scoring.tokens import TextTokenizer
from tests.backbones import CORPUS
from tests.conftest import REPO
from tests.faulty_graph import fail_on_token_ids


@pytest.fixture
def exported(make_workspace):
    workspace = make_workspace("deberta-v2", rows=60)
    workspace.write_params(infer={"block_rows": 8})
    load_checkpoint.main()
    export.main()
    return workspace


def test_full_disk_mid_run_is_a_clear_error_and_keeps_finished_parts(exported, monkeypatch):
    real_save = parts_module.PartFiles.save
    calls = {"count": 0}

    def save_until_full(parts, index, part):
        calls["count"] += 1
        if calls["count"] > 3:  # the disk fills while the fourth part is written
            with parts_module.atomic_file(parts.part(index)) as temporary:
                temporary.filesystem.open_output_stream(temporary.path).write(part.data[: len(part.data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(parts, index, part)

    monkeypatch.setattr(parts_module.PartFiles, "save", save_until_full)
    with pytest.raises(UserError, match=r"cannot write .*part-000003\.arrow: No space left on device; free some space"):
        infer.main()
    parts = Path("out/predictions.parquet.parts")
    assert not Path("out/predictions.parquet").exists()
    assert sorted(path.name for path in parts.glob(f"part-*{PART_SUFFIX}")) == [
        f"part-00000{i}{PART_SUFFIX}" for i in range(3)
    ]
    assert not list(parts.glob(".*tmp")), "no temporary file is left behind"
    monkeypatch.setattr(parts_module.PartFiles, "save", real_save)
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


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


# What can happen to a finished part (or its tally) between runs, one block each; the last block stays whole.
DAMAGES = {
    "truncated to 100 bytes": lambda part, tally: part.write_bytes(part.read_bytes()[:100]),
    "one bit flipped": lambda part, tally: flip_a_bit(part),
    "emptied": lambda part, tally: part.write_bytes(b""),
    "another block's part": lambda part, tally: part.write_bytes(
        sorted(part.parent.glob(f"part-*{PART_SUFFIX}"))[-1].read_bytes()
    ),
    "tally truncated": lambda part, tally: tally.write_bytes(tally.read_bytes()[:20]),
    "tally not UTF-8": lambda part, tally: tally.write_bytes(b"\xff" + tally.read_bytes()),
    "tally gone": lambda part, tally: tally.unlink(),
}
WARNINGS = {
    "truncated to 100 bytes": "is not what was written (100 bytes",
    "one bit flipped": "is not what was written (",
    "emptied": "is not what was written (0 bytes",
    "another block's part": "is not what was written (",
    "tally truncated": "has a damaged tally (JSONDecodeError)",
    "tally not UTF-8": "has a damaged tally (UnicodeDecodeError)",
    "tally gone": "has no tally",
}


def test_damaged_parts_are_scored_again_named_and_counted(exported, monkeypatch, caplog):
    monkeypatch.setattr(PartFiles, "remove", lambda self: None)  # keep the parts, as a killed run leaves them
    exported.write_params(infer={"block_rows": 4})  # more blocks than damages
    infer.main()
    reference = Path("out/predictions.parquet").read_bytes()
    Path("out/predictions.parquet").unlink()
    parts = Path("out/predictions.parquet.parts")
    for index, damage in enumerate(DAMAGES.values()):
        damage(parts / f"part-{index:06d}{PART_SUFFIX}", parts / f"part-{index:06d}.json")
    with caplog.at_level(logging.WARNING):
        infer.main()
    assert Path("out/predictions.parquet").read_bytes() == reference
    metrics = json.loads(Path("metrics/infer_details.json").read_text())
    assert metrics["blocks"] > len(DAMAGES)
    assert (metrics["rescored_blocks"], metrics["resumed_blocks"]) == (len(DAMAGES), metrics["blocks"] - len(DAMAGES))
    for index, kind in enumerate(DAMAGES):
        assert f"part-{index:06d}{PART_SUFFIX} (block {index}) {WARNINGS[kind]}" in caplog.text, kind
    assert caplog.text.count("scoring the block again") == 7


def test_a_block_that_raises_names_the_block_and_its_first_row_and_keeps_the_parts_before_it(exported):
    texts = [CORPUS[0]] * 64
    texts[30] = CORPUS[1]  # the graph fails on Cyrillic tokens: only in the block that holds row 30
    pd.DataFrame({"id": [f"row-{index}" for index in range(64)], "text": texts}).to_parquet("data.parquet")
    tokenizer = TextTokenizer.load(Path("models/onnx"))
    latin, cyrillic = (set(tokens.input_ids.tolist()) for tokens in tokenizer.encode(CORPUS[:2]))
    fail_on_token_ids(Path("models/onnx/model.onnx"), cyrillic - latin, tokenizer.backend.get_vocab_size())
    blocks = [block.ids.to_pylist() for block in scoring_blocks(load_params())]
    failing = next(index for index, ids in enumerate(blocks) if "row-30" in ids)
    assert failing > 0, "blocks before the failing one are scored"
    with pytest.raises(
        BlockFailed,
        match=rf"^scoring block {failing} \(first row id '{blocks[failing][0]}'\) failed: \w+: .*indices element out of",
    ) as raised:
        infer.main()
    assert raised.value.__cause__ is not None, "onnxruntime's own error and traceback are kept"
    parts = Path("out/predictions.parquet.parts")
    assert sorted(path.name for path in parts.glob(f"part-*{PART_SUFFIX}")) == [
        f"part-{i:06d}{PART_SUFFIX}" for i in range(failing)
    ]
    assert not Path("out/predictions.parquet").exists() and not Path("out/predictions.parquet.lease").exists()


def start_infer(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "stages.infer"]
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # two real runs, one paused with SIGSTOP
def test_a_second_run_on_the_same_output_exits_2_naming_the_run_that_owns_it(exported):
    exported.write_params(infer={"block_rows": 2})
    first = start_infer(exported.root)
    parts = Path("out/predictions.parquet.parts")
    deadline = time.monotonic() + 300
    while not list(parts.glob(f"part-*{PART_SUFFIX}")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # paused mid-run, holding its lease: the second run cannot come too late
    try:
        engines = ["local", "ray"] if importlib.util.find_spec("ray") else ["local"]
        for engine in engines:
            exported.write_params(infer={"engine": engine})
            second = start_infer(exported.root)
            _, stderr = second.communicate(timeout=300)
            last = stderr.strip().splitlines()[-1]
            assert second.returncode == 2, stderr[-3000:]
            assert last.startswith("error: infer.output = out/predictions.parquet is being written by another run")
            assert f"pid {first.pid}, started" in last, last
            print(f"{engine}: {last}")
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    metrics = json.loads(Path("metrics/infer_details.json").read_text())
    assert (metrics["rows"], metrics["resumed_blocks"]) == (64, 0), "the second runs touched nothing"
    assert not Path("out/predictions.parquet.lease").exists()
