"""Backbones as users hold them: the hub's file layouts, a hub id in the local cache offline, a missing package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from stages import export, infer, load_checkpoint, parity
from tests.conftest import REPO
from tests.layouts import LAYOUTS
from tools.generate.real_text import REAL_TEXT

HUB_ID = "microsoft/mdeberta-v3-base"
REVISION = "6c5ca7e1e3f4f83a2f3d5b9b4a4b0d8e7c1f2a3b"  # any 40-hex commit: the cache names snapshots by it
SHORT_ROWS, LONG_ROWS = 60, 3


def real_rows(path: Path) -> pd.DataFrame:
    """Real multilingual rows for the stages: short messages and a few paragraphs longer than a window."""
    frame = pq.read_table(REAL_TEXT).to_pandas()
    rows = pd.concat([frame.head(SHORT_ROWS), frame.tail(LONG_ROWS)])
    rows[["id", "text"]].to_parquet(path)
    return rows


def stage_layouts() -> list:
    """Every hub layout; the demo's own (spm.model) stays in the fast loop, the others are slow."""
    return [pytest.param(layout, marks=[] if layout == "spm.model" else [pytest.mark.slow]) for layout in LAYOUTS]


@pytest.mark.parametrize("layout", stage_layouts())
def test_a_backbone_as_the_hub_ships_it_passes_every_stage(make_workspace, layout):
    workspace = make_workspace(LAYOUTS[layout], layout=layout)
    rows = real_rows(workspace.root / "real.parquet")
    workspace.write_params(infer={"input": "real.parquet"})
    load_checkpoint.main()
    export.main()
    parity.main()
    infer.main()
    for directory in ("models/model", "models/onnx"):  # scoring reads tokenizer.json alone, whatever the backbone had
        assert (workspace.root / directory / "tokenizer.json").is_file(), directory
    assert json.loads(Path("metrics/parity.json").read_text())["passed"]
    predictions = pd.read_parquet(workspace.params["infer"]["output"])
    assert predictions["id"].tolist() == rows["id"].tolist()
    theirs = AutoTokenizer.from_pretrained("models/model")(
        rows["text"].tolist(), add_special_tokens=False, return_offsets_mapping=True
    )
    for row, offsets in zip(predictions.itertuples(), theirs["offset_mapping"], strict=True):
        assert list(zip(row.starts, row.ends, strict=True)) == [tuple(pair) for pair in offsets], row.id
    assert not predictions["truncated"].any(), "sliding windows (the default) score every token of the long rows"


def hub_cache(home: Path, backbone: Path) -> None:
    """`backbone`'s files in a Hugging Face cache under `home`, laid out as `hf download` leaves them."""
    repo = home / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for index, file in enumerate(sorted(backbone.iterdir())):
        blob = repo / "blobs" / f"{index:040x}"
        shutil.copy2(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))


def run_stage(root: Path, stage: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    command = [sys.executable, "-m", f"stages.{stage}"]
    return subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=600)


def test_a_hub_id_is_read_from_the_local_cache_offline(make_workspace, tmp_path):
    workspace = make_workspace(layout="spm.model")
    load_checkpoint.main()
    from_directory = (workspace.root / "models/model/tokenizer.json").read_text()
    hub_cache(tmp_path / "hf", workspace.root / "backbone")
    workspace.write_params(model={"backbone": HUB_ID})
    offline = {"HF_HUB_OFFLINE": "1"}
    result = run_stage(workspace.root, "load_checkpoint", HF_HOME=str(tmp_path / "hf"), **offline)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (workspace.root / "models/model/tokenizer.json").read_text() == from_directory  # the same files, read alike
    assert f"backbone {HUB_ID}: the Hugging Face cache's snapshot {REVISION}" in result.stderr
    head = json.loads((workspace.root / "models/model/head.json").read_text())
    assert (head["backbone"], head["backbone_revision"]) == (HUB_ID, REVISION), "which files the model was built from"
    empty = run_stage(workspace.root, "load_checkpoint", HF_HOME=str(tmp_path / "empty"), **offline)
    errors = [line for line in empty.stderr.splitlines() if line.startswith("error:")]
    assert empty.returncode == 2 and len(errors) == 1 and "Traceback" not in empty.stderr, empty.stderr[-2000:]
    assert f"cannot load backbone '{HUB_ID}' (model.backbone)" in errors[0] and "hf download" in errors[0]


def test_without_sentencepiece_the_error_names_the_package_and_the_file(make_workspace):
    workspace = make_workspace(layout="spm.model")
    probe = (
        "import sys; sys.modules['sentencepiece'] = None\n"  # as if it were not installed
        "from stages import load_checkpoint; from stages.core.runner import run_stage; run_stage(load_checkpoint.main)"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=workspace.root, env=environment, capture_output=True, text=True, timeout=600
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "spm.model" in errors[0] and "pip install sentencepiece" in errors[0] and "tiktoken" not in errors[0]
