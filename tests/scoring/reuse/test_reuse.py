"""Scoring only what is new: every data change and every invalidation gives the bytes of a run from scratch."""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from stages import export, infer, load_checkpoint
from stages.core.params import load_params
from stages.scoring.reuse import keys, plan
from stages.scoring.reuse.store import ROWS_SUFFIX
from stages.scoring.served import ServedModel
from stages.scoring.storage.parts import PART_SUFFIX
from tests.conftest import REPO
from tools import score_store

ROWS = 240
REAL_TEXT = REPO / "tests/data/real_text.parquet"


def exported_at(make_workspace, precision: str):
    """A workspace with a tiny model exported at `precision` and a dataset of real multilingual text (with a few bad
    rows)."""
    workspace = make_workspace("deberta-v2")
    texts = [*pd.read_parquet(REAL_TEXT).text.tolist()[:ROWS], "", None, "  "]
    pd.DataFrame({"id": [f"row-{index}" for index in range(len(texts))], "text": texts}).to_parquet("data.parquet")
    workspace.write_params(parity={"samples": 8}, export={"precision": precision}, infer={"block_rows": 32})
    load_checkpoint.main()
    export.main()
    return workspace


@pytest.fixture
def exported(make_workspace):
    """At int8: dynamic int8 quantizes each batch with one scale, so a row's scores depend on its batch."""
    return exported_at(make_workspace, "int8")


def served_model(workspace) -> ServedModel:
    params = load_params()
    return ServedModel.load(Path(params.export.output), params.runtime)


def score(workspace, dataset: pd.DataFrame, **infer_params) -> tuple[bytes, dict]:
    """Score `dataset` with the workspace's params (and `infer_params`); the output's bytes and the run's details."""
    dataset.to_parquet("data.parquet")
    workspace.write_params(infer={"reuse": True, "store": None, "output": "out/predictions.parquet", **infer_params})
    infer.main()
    details = json.loads(Path(workspace.params["infer"]["details"]).read_text())
    return Path(workspace.params["infer"]["output"]).read_bytes(), details


def from_scratch(workspace, dataset: pd.DataFrame) -> bytes:
    """The output of a run with an empty store."""
    output, details = score(workspace, dataset, store="scratch.store", output="out/scratch.parquet")
    assert details["reused_rows"] == 0
    shutil.rmtree("scratch.store")
    return output


def appended(frame: pd.DataFrame) -> pd.DataFrame:
    extra = pd.read_parquet(REAL_TEXT).text.tolist()[ROWS : ROWS + 12]
    return pd.concat([frame, pd.DataFrame({"id": [f"new-{i}" for i in range(len(extra))], "text": extra})])


def edited(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for row in (17, 120, 199):
        frame.iloc[row, 1] = f"{frame.iloc[row, 1]} (edited)"
    return frame


def deleted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(index=[3, 90, 91, 150]).reset_index(drop=True)


def deleted_one(frame: pd.DataFrame) -> pd.DataFrame:
    """One row gone near the start: blocks cut by content end where they ended (cut by row count, every later
    block would shift by one row: 97 rows scored instead of 12)."""
    return frame.drop(index=[3]).reset_index(drop=True)


def reordered(frame: pd.DataFrame) -> pd.DataFrame:
    order = list(range(len(frame)))
    order[40:60] = reversed(order[40:60])
    return frame.iloc[order].reset_index(drop=True)


def duplicated(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[5, 6, 7]].assign(id=["dup-5", "dup-6", "dup-7"])]).reset_index(drop=True)


def renamed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(id=[f"renamed-{index}" for index in range(len(frame))])


@pytest.mark.parametrize(
    ("change", "most_scored"),
    [
        (appended, 12 + 64),
        (edited, 3 * 64),
        (deleted, 3 * 64),
        (deleted_one, 24),
        (reordered, 4 * 64),
        (duplicated, 64),
        (renamed, 0),
    ],
)
def test_a_data_change_scores_only_what_it_changed_and_gives_the_from_scratch_bytes(
    exported, change: Callable[[pd.DataFrame], pd.DataFrame], most_scored: int
):
    base = pd.read_parquet("data.parquet")
    score(exported, base)
    changed = change(base)
    output, details = score(exported, changed)
    assert output == from_scratch(exported, changed)
    assert details["rows"] == len(changed) == details["reused_rows"] + details["scored_rows"]
    assert details["scored_rows"] <= most_scored, details
    assert details["reused_rows"] >= len(changed) - most_scored
    assert details["store"]["rows"] >= len(base)


def test_a_batch_invariant_model_scores_exactly_the_changed_rows_and_gives_the_from_scratch_bytes(make_workspace):
    workspace = exported_at(make_workspace, "fp32")
    if not served_model(workspace).batch_invariant(
        pd.read_parquet("data.parquet").text.tolist()
    ):  # measured, not assumed: such a CPU keeps the batch context
        pytest.fail("fp32 on onnxruntime's CPU provider was batch-invariant on every CPU measured; not here")
    base = pd.read_parquet("data.parquet")
    score(workspace, base)
    seen = set(base.text)
    for change in (appended, edited, deleted, deleted_one, reordered, duplicated, renamed):
        changed = change(base)
        new_rows = int((~changed.text.isin(seen)).sum())  # texts no run scored before (the real text repeats some)
        assert new_rows == {appended: 11, edited: 3}.get(change, 0), change.__name__
        output, details = score(workspace, changed)
        assert output == from_scratch(workspace, changed), change.__name__
        assert (details["scored_rows"], details["reused_rows"]) == (new_rows, len(changed) - new_rows), details
        seen |= set(changed.text)


def test_the_probe_finds_dynamic_int8_depends_on_its_batch(exported):
    assert not served_model(exported).batch_invariant(pd.read_parquet("data.parquet").text.tolist())


def test_a_new_file_in_a_directory_dataset_scores_only_its_rows_and_gives_the_from_scratch_bytes(exported):
    base = pd.read_parquet("data.parquet")
    Path("incoming/2026-12").mkdir(parents=True)
    for number, start in enumerate(range(0, len(base), 100)):
        base.iloc[start : start + 100].to_parquet(f"incoming/2026-12/{number:03d}.parquet")
    Path("incoming/_SUCCESS").write_text("")  # what Spark leaves: not data
    exported.write_params(infer={"input": "incoming", "reuse": True, "store": None, "output": "out/in.parquet"})
    infer.main()
    new = appended(base.iloc[:0])
    new.to_parquet("incoming/2026-12/003.parquet")  # a day's new file
    infer.main()
    details = json.loads(Path(exported.params["infer"]["details"]).read_text())
    # each file is cut into blocks on its own: the files before it keep their blocks, batches and scores
    assert details["rows"] == len(base) + len(new) and details["scored_rows"] == len(new), details
    exported.write_params(infer={"store": "scratch.store", "output": "out/scratch.parquet"})
    infer.main()
    assert Path("out/in.parquet").read_bytes() == Path("out/scratch.parquet").read_bytes()
    rows = pd.read_parquet("out/in.parquet")
    assert rows.id.tolist() == [*base.id, *new.id], "the directory's files in path order, as one file"


def test_a_second_run_reuses_every_row_and_a_change_of_what_shapes_outputs_reuses_none(exported, monkeypatch, caplog):
    base = pd.read_parquet("data.parquet")
    first, details = score(exported, base)
    assert details["reused_rows"] == 0 and details["scored_rows"] == len(base)
    with caplog.at_level(logging.INFO, logger="stages.infer"):
        again, details = score(exported, base)
    assert again == first and details["reused_rows"] == len(base) and details["scored_rows"] == 0
    summary = next(message for message in caplog.messages if message.startswith("wrote "))
    assert f" s: all {len(base)} rows reused ({len(base)} from the score store), CPU" in summary, summary
    assert "texts/s" not in summary, "no rate where the model scored nothing"
    for neutral in ({"output": "out/elsewhere.parquet"}, {"engine": "local", "ray_actors": 3}):
        moved, details = score(exported, base, **neutral)
        assert moved == first and details["scored_rows"] == 0, neutral
    exported.write_params(runtime={"intra_op_num_threads": 2})
    threads, details = score(exported, base)
    assert threads == first and details["scored_rows"] == 0
    for shaping in ({"max_batch_tokens": 1000}, {"probabilities": True}, {"stride": 64}, {"aggregation": "first"}):
        _, details = score(exported, base, **shaping)
        assert details["reused_rows"] == 0, shaping
    with monkeypatch.context() as patched:  # a code change that cuts batches elsewhere
        patched.setattr(keys, "BATCH_CUT", keys.BATCH_CUT + 1)
        patched.setattr(plan, "BATCH_CUT", keys.BATCH_CUT)
        _, details = score(exported, base)
        assert details["reused_rows"] == 0, "batches cut elsewhere reuse nothing"
    sidecar = Path(exported.params["export"]["output"]) / "model.json"
    sidecar.write_text(sidecar.read_text().replace("{", '{"note": "re-exported", ', 1))
    _, details = score(exported, base)
    assert details["reused_rows"] == 0, "a changed model.json reuses nothing"
    tokenizer = Path(exported.params["export"]["output"]) / "tokenizer_config.json"
    tokenizer.write_text(tokenizer.read_text() + "\n")
    _, details = score(exported, base)
    assert details["reused_rows"] == 0, "a changed tokenizer file reuses nothing"


def test_a_damaged_store_entry_is_scored_again_never_trusted(exported, caplog):
    base = pd.read_parquet("data.parquet")
    first, _ = score(exported, base)
    parts = sorted(Path("out/.score-store").glob(f"*/*[0-9a-f]{PART_SUFFIX}"))
    damaged = next(part for part in parts if not part.name.endswith(ROWS_SUFFIX))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    truncated = next(part for part in parts if part != damaged and not part.name.endswith(ROWS_SUFFIX))
    truncated.write_bytes(truncated.read_bytes()[:100])
    output, details = score(exported, base)
    assert output == first
    assert 0 < details["scored_rows"] <= 2 * 64 and details["reused_rows"] == len(base) - details["scored_rows"]
    assert "is not what was written" in caplog.text
    again, details = score(exported, base)
    assert again == first and details["scored_rows"] == 0, "the damaged entries were written again"


def test_a_store_inside_the_output_or_unwritable_is_exit_2_in_one_line(exported, tmp_path):
    exported.write_params(infer={"output": "out/dataset", "store": "out/dataset/store"})
    result = subprocess.run([sys.executable, "-m", "stages.infer"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "infer.store = out/dataset/store is inside infer.output" in result.stderr
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's directory would go")
    exported.write_params(infer={"output": "out/predictions.parquet", "store": str(blocked)})
    result = subprocess.run([sys.executable, "-m", "stages.infer"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"cannot write {blocked}/" in last, result.stderr[-2000:]
    assert (tmp_path / "out/predictions.parquet.parts").is_dir(), "the scored parts are kept for the rerun"


def test_the_store_command_lists_each_model_and_prune_keeps_the_current_one(exported, capsys):
    base = pd.read_parquet("data.parquet")
    tokens = exported.params["infer"]["max_batch_tokens"]
    score(exported, base, max_batch_tokens=1000)
    score(exported, base, max_batch_tokens=tokens)
    score_store.main([])
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and sum("(current)" in line for line in listed) == 1, listed
    assert all(f"{len(base)} rows" in line for line in listed), listed
    score_store.main(["--prune"])
    assert len(list(Path("out/.score-store").iterdir())) == 2  # the current model's directory and the .gitignore
    _, details = score(exported, base)
    assert details["scored_rows"] == 0, "the current model's entries were kept"


@pytest.mark.parametrize("first_rows", [["the same words, row after row"] * 8, [""] * 8], ids=["duplicates", "empty"])
def test_the_probe_is_not_fooled_by_identical_first_rows(exported, first_rows):
    """Identical windows side by side quantize with the scale each has alone: a probe of them alone would call
    dynamic int8 batch-invariant, and reuse would mix rows scored in other batches into 'from scratch' bytes."""
    texts = [*first_rows, *pd.read_parquet("data.parquet").text.tolist()]
    assert not served_model(exported).batch_invariant(texts)


def test_fp32_is_found_batch_invariant_behind_identical_first_rows(make_workspace):
    workspace = exported_at(make_workspace, "fp32")
    texts = [*[""] * 8, *["the same words, row after row"] * 8, *pd.read_parquet("data.parquet").text.tolist()]
    assert served_model(workspace).batch_invariant(texts)


@pytest.mark.parametrize("block_rows", [1, 2, 3, 8, 64])
def test_blocks_end_where_the_row_by_row_rule_says_whatever_rows_are_pending(block_rows):
    generator = random.Random(block_rows)
    half = max(1, block_rows // 2)
    for _ in range(60):
        drawn = [generator.randbytes(keys.KEY_BYTES) for _ in range(generator.randrange(0, 600))]
        pending = generator.randrange(0, 2 * block_rows)
        expected, rows = [], pending
        for index, key in enumerate(drawn):  # the rule, one row at a time
            rows += 1
            if rows >= 2 * block_rows or (rows >= half and keys.key_number(key) % half == 0):
                expected.append(index)
                rows = 0
        assert list(plan.block_cuts(drawn, pending, block_rows)) == expected
