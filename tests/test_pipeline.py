"""The real `dvc repro` on the embedded demo, in a temporary copy of the repository."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pandas as pd
import pytest
import yaml
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]
PIPELINE_FILES = (
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
    "stages",
    "heads",
    "tools",
    "data/demo.parquet",
    "data/validation.parquet",
    "models/demo",
)

NEW_ROWS = 50  # appended to the demo's dataset

pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


def copy_pipeline(root: Path) -> None:
    """The pipeline's files (code, params, demo artefacts) under `root`, committed to a fresh git repository."""
    for name in PIPELINE_FILES:
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline"],
    ):
        subprocess.run(command, cwd=root, check=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the pipeline after one `dvc repro`."""
    root = tmp_path_factory.mktemp("demo")
    copy_pipeline(root)
    return root, run([sys.executable, "-m", "dvc", "repro"], root)


def test_dvc_repro_runs_all_four_stages_on_the_demo(demo):
    root, result = demo
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("load_checkpoint", "export", "parity", "infer"):
        assert f"Running stage '{stage}'" in result.stdout
    assert "grid 8x512" in result.stderr and "PASS" in result.stderr  # the parity table
    parity = json.loads((root / "metrics/parity.json").read_text())
    assert parity["passed"] is True and parity["label_agreement"] >= 0.999
    metrics = json.loads((root / "metrics/infer_details.json").read_text())
    source = pd.read_parquet(root / "data/demo.parquet")
    assert metrics["rows"] == len(source) >= 5000
    assert metrics["entity_f1"] >= 0.95 and metrics["token_accuracy"] >= 0.99  # against the demo's gold spans
    assert parity["entity_f1_onnx"] == parity["entity_f1_torch"] >= 0.95
    verdict = json.loads((root / "models/verdict.json").read_text())  # what parity verified is what infer served,
    assert metrics["verified"] and verdict["passed"]  # on whichever provider this host started (CUDA on a GPU)
    assert (
        metrics["verification"]["served"] == verdict["served"] and verdict["served"]["provider"] == parity["provider"]
    )
    assert metrics["provider"] == parity["provider"] in ("CUDAExecutionProvider", "CPUExecutionProvider")
    predictions = pd.read_parquet(root / "data/predictions.parquet")
    assert predictions["id"].tolist() == source["id"].tolist()
    assert (root / "models/onnx/model.onnx").is_file()


def test_second_repro_reruns_nothing(demo):
    root, _ = demo
    result = run([sys.executable, "-m", "dvc", "repro"], root)
    assert result.returncode == 0 and "Running stage" not in result.stdout, result.stdout


def test_a_runtime_change_reruns_the_stages_that_read_runtime(demo):
    root, _ = demo
    params_file = root / "params.yaml"
    original = params_file.read_text(encoding="utf-8")
    params = yaml.safe_load(original)
    params["runtime"]["intra_op_spinning"] = not params["runtime"]["intra_op_spinning"]
    params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    try:
        changed = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout)
    finally:
        params_file.write_text(original, encoding="utf-8")
    stages = {stage.split(":")[-1] for stage in changed}
    assert {"export", "infer", "benchmark"} <= stages and "load_checkpoint" not in stages, changed
    assert changed["benchmark"] == [{"changed deps": {"params.yaml": {"runtime": "modified"}}}], changed["benchmark"]
    after = run([sys.executable, "-m", "dvc", "status", "--json"], root)
    assert after.returncode == 0 and json.loads(after.stdout) == {}, after.stdout


def test_new_rows_rerun_only_infer_which_scores_only_what_is_new(demo):
    root, _ = demo
    dataset, predictions = root / "data/demo.parquet", root / "data/predictions.parquet"
    original, scored = dataset.read_bytes(), predictions.read_bytes()
    source = pd.read_parquet(dataset)
    new = source.head(NEW_ROWS).assign(id=lambda rows: "new-" + rows.id, text=lambda rows: rows.text + " (new)")
    pd.concat([source, new]).to_parquet(dataset)  # gold spans still fit: text appended at the end
    try:
        changed = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout)
        assert set(changed) == {"infer"}, changed  # the model is exported and verified once
        appended = run([sys.executable, "-m", "dvc", "repro"], root)
        details = json.loads((root / "metrics/infer_details.json").read_text())
    finally:
        dataset.write_bytes(original)
    assert appended.returncode == 0, appended.stderr[-3000:]
    assert re.findall(r"Running stage '(\w+)'", appended.stdout) == ["infer"], appended.stdout
    assert details["rows"] == len(source) + NEW_ROWS and NEW_ROWS <= details["scored_rows"] < len(source) / 4, details
    assert details["reused_rows"] == details["rows"] - details["scored_rows"], details
    print(
        f"{NEW_ROWS} rows appended: dvc repro ran infer, scored {details['scored_rows']}, reused {details['reused_rows']}"
    )
    restored = run([sys.executable, "-m", "dvc", "repro"], root)
    details = json.loads((root / "metrics/infer_details.json").read_text())
    assert re.findall(r"Running stage '(\w+)'", restored.stdout) == ["infer"], restored.stdout
    assert (details["scored_rows"], details["reused_rows"]) == (0, len(source)), details
    assert predictions.read_bytes() == scored, "the first run's predictions, byte for byte"
    print(f"rows removed again: scored 0, reused {details['reused_rows']}, the first run's predictions byte for byte")


@pytest.mark.parametrize(
    ("edited", "reruns"),
    [
        ("stages/scoring/cluster/engine.py", {"infer"}),  # Ray: only the stage that scores
        ("stages/verify/compare.py", {"export", "parity"}),  # the gate: the int8 search judges with it too
        ("stages/graph/precision.py", {"export", "benchmark"}),
        ("tools/bench/profile.py", set()),  # a tool: nothing
    ],
)
def test_an_edit_reruns_exactly_the_stages_that_import_the_file(demo, edited, reruns):
    root, _ = demo
    path = root / edited
    original = path.read_bytes()
    path.write_bytes(original + b"\n# edited\n")
    try:
        changed = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout)
    finally:
        path.write_bytes(original)
    assert {stage.split(":")[-1] for stage in changed} == reruns, changed


@pytest.mark.parametrize("edited", ["tokenizer_config.json", "spm.model"])
def test_a_backbone_edit_shows_in_dvc_status(demo, edited):
    root, _ = demo
    path = root / "models/demo/backbone" / edited
    original = path.read_bytes()
    path.write_bytes(original + b"\n")
    try:
        changed = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout)
    finally:
        path.write_bytes(original)
    assert changed == {"load_checkpoint": [{"changed deps": {"models/demo/backbone": "modified"}}]}, changed
    assert json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout) == {}


def test_perturbed_onnx_model_stops_dvc_at_parity(demo):
    root, _ = demo
    path = root / "models/onnx/model.onnx"
    graph = onnx.load(path)
    initializer = next(item for item in graph.graph.initializer if len(item.dims) == 2 and 4 in item.dims)
    weights = numpy_helper.to_array(initializer).copy()
    weights.flat[0] += 1e-2
    initializer.CopyFrom(numpy_helper.from_array(weights, initializer.name))
    onnx.save(graph, path)
    result = run([sys.executable, "-m", "dvc", "repro", "--single-item", "parity"], root)
    assert result.returncode != 0
    assert "parity failed, so the pipeline stops before infer" in result.stderr
    assert "parity.atol would need" in result.stderr
    assert json.loads((root / "metrics/parity.json").read_text())["passed"] is False


def experiments(shown: list[dict]) -> dict[str, dict]:
    """`dvc exp show --json`: each experiment's name -> its params and metrics, as DVC recorded them."""
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            state = (experiment.get("executor") or {}).get("state")
            for revision in experiment["revs"]:
                data = revision.get("data") or {}
                found[revision.get("name") or revision["rev"]] = {
                    "state": state,
                    "params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                    "metrics": {path: item.get("data", {}) for path, item in (data.get("metrics") or {}).items()},
                }
    return found


def test_a_queued_sweep_shows_each_variants_verdict_speed_and_memory(demo):
    root, _ = demo
    # A sweep scores a sample of the data, committed as the user would: 600 of the demo's rows.
    pd.read_parquet(root / "data/demo.parquet").head(600).to_parquet(root / "data/sample.parquet")
    for command in (["add", "data/sample.parquet"], ["commit", "-qm", "a sample to sweep on"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *command], cwd=root, check=True)
    variants = [("fp32", 2048), ("int8", 4096)]
    for precision, tokens in variants:
        # up to infer: the benchmark stage (run by the fixture's repro) adds minutes and no column read here; the int8
        # variant exports with TorchScript, which takes a second where dynamo takes ten (the exporters' own tests)
        command = ["dvc", "exp", "run", "--queue", "infer", "-S", f"export.precision={precision}"]
        settings = ["-S", f"infer.max_batch_tokens={tokens}", "-S", "infer.input=data/sample.parquet"]
        if precision == "int8":
            settings += ["-S", "export.exporter=torchscript", "-S", "export.opset=17"]
        result = run([sys.executable, "-m", *command, *settings], root)
        assert result.returncode == 0, result.stderr[-2000:]
    assert run([sys.executable, "-m", "dvc", "queue", "start", "-j", "1"], root).returncode == 0
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = run([sys.executable, "-m", "dvc", "queue", "status"], root).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    shown = run([sys.executable, "-m", "dvc", "exp", "show", "--json"], root)
    found = experiments(json.loads(shown.stdout))
    assert len(found) == len(variants), (status, found)
    assert status.count("Success") == len(variants), status
    seen = set()
    for experiment in found.values():
        assert experiment["state"] in (None, "success"), experiment  # DVC drops the executor once collected
        parity, scoring = experiment["metrics"]["metrics/parity.json"], experiment["metrics"]["metrics/infer.json"]
        assert parity["passed"] is True and parity["label_agreement"] >= 0.99
        assert parity["precision"] == experiment["params"]["export"]["precision"]
        assert parity["rows_label_agreement"] >= 0.999  # int8 included: the demo model is confident on text
        assert parity["entity_f1_onnx"] >= parity["entity_f1_torch"] - 0.005
        assert scoring["texts_per_s"] > 0 and scoring["peak_rss_mb"] > 0 and scoring["entity_f1"] >= 0.95
        seen.add((experiment["params"]["export"]["precision"], experiment["params"]["infer"]["max_batch_tokens"]))
    assert seen == set(variants)
    columns = sum(len(leaves(metrics)) for metrics in experiment["metrics"].values())
    assert columns < 80, f"{columns} metric columns: dvc exp show should fit a screen, not list every grid case"
    keep = "passed|label_agreement|texts_per_s|peak_rss_mb|precision|max_batch_tokens"
    table = [  # the README's command
        *["dvc", "exp", "show", "--csv", "--only-changed", "--sort-by", "metrics/infer.json:texts_per_s"],
        *["--sort-order", "desc", "--keep", keep],
    ]
    rows = list(csv.DictReader(run([sys.executable, "-m", *table], root).stdout.splitlines()))
    ranked = [row for row in rows if row["precision"] and row["Experiment"]]
    assert {"passed", "label_agreement", "texts_per_s", "peak_rss_mb"} <= set(rows[0]), list(rows[0])
    speeds = [float(row["texts_per_s"]) for row in ranked]
    assert len(speeds) == len(variants) and speeds == sorted(speeds, reverse=True), ranked


def leaves(tree: dict) -> list:
    """The scalar values of a nested metrics dict: one column each in `dvc exp show`."""
    return [leaf for value in tree.values() for leaf in (leaves(value) if isinstance(value, dict) else [value])]
