"""Verified means served: `infer` scores only with a model whose passing verdict covers exactly what it serves (the
model's files, the runtime, the provider that runs, the precision, TF32, the CPU's kernel class), however it is
started; and rows scored under one served identity are never reused under another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stages import export, infer, load_checkpoint, parity
from stages.core.errors import CheckFailed, UserError
from stages.graph import runners
from stages.graph.verdict import check_run_member

VERDICT = Path("models/verdict.json")


def exported(make_workspace, **parity_params):
    """A workspace whose infer refuses to score unverified (the default users get), exported."""
    workspace = make_workspace("bert")
    workspace.write_params(infer={"allow_unverified": False}, parity=parity_params)
    load_checkpoint.main()
    export.main()
    return workspace


def serving_on(patch: pytest.MonkeyPatch, provider: str) -> None:
    """Make every onnxruntime runner report `provider` as the one running (as a GPU machine's would)."""
    real = runners.onnxruntime_identity
    patch.setattr(runners, "onnxruntime_identity", lambda _, precision, runtime: real(provider, precision, runtime))


def test_a_failed_gate_stops_infer_started_directly_in_one_line(make_workspace):
    workspace = exported(make_workspace, atol=1e-12, rtol=0.0)
    with pytest.raises(CheckFailed):
        parity.main()
    verdict = json.loads(VERDICT.read_text())
    assert verdict["passed"] is False and verdict["failures"] and verdict["criteria"]["atol"] == 1e-12
    assert verdict["served"]["provider"] == "CPUExecutionProvider" and "model.onnx" in verdict["model_files"]
    started = subprocess.run([sys.executable, "-m", "stages.infer"], capture_output=True, text=True)
    assert started.returncode == 2, started.stderr
    (line,) = [line for line in started.stderr.splitlines() if "parity verdict" in line]
    assert f"the parity verdict {VERDICT} failed (" in line and "`dvc repro parity`" in line, line
    assert "infer.allow_unverified" in line and not Path("out/predictions.parquet").exists()
    workspace.write_params(infer={"engine": "ray"})  # the cluster's driver checks before it starts a thing
    started = subprocess.run([sys.executable, "-m", "stages.infer"], capture_output=True, text=True)
    assert started.returncode == 2 and line in started.stderr, started.stderr
    assert not Path("out/predictions.parquet.parts").exists()
    # The user's explicit choice: scored, and said so in the metrics and in the output's manifest.
    workspace.write_params(infer={"engine": "local", "allow_unverified": True, "output": "out/predictions"})
    infer.main()
    metrics = json.loads(Path("metrics/infer.json").read_text())
    details = json.loads(Path("metrics/infer_details.json").read_text())
    assert metrics["verified"] is False and "failed" in details["verification"]["reason"]
    manifest = json.loads(Path("out/predictions/_manifest.json").read_text())
    assert manifest["verification"] == details["verification"]


def test_a_verdict_for_other_files_or_another_serving_stops_infer(make_workspace, monkeypatch):
    exported(make_workspace)
    parity.main()
    infer.main()
    assert json.loads(Path("metrics/infer.json").read_text())["verified"] is True
    with monkeypatch.context() as patch:  # a verdict made on a CPU machine, served on a GPU one
        serving_on(patch, "CUDAExecutionProvider")
        with pytest.raises(UserError, match=r"verified another serving: .*provider 'CPUExecutionProvider' verified, "
                           r"'CUDAExecutionProvider' serving; tf32 'unset' verified, 'off' serving"):  # fmt: skip
            infer.main()
    tokenizer = Path("models/onnx/tokenizer.json")
    tokenizer.write_text(tokenizer.read_text().replace("[UNK]", "[UNKNOWN]"))  # the served files changed since
    with pytest.raises(UserError, match=r"was made for other model files \(tokenizer\.json differ\)"):
        infer.main()
    VERDICT.unlink()
    with pytest.raises(UserError, match=rf"no parity verdict at {VERDICT} \(parity\.verdict\)"):
        infer.main()


def test_rows_scored_under_one_served_identity_are_not_reused_under_another(make_workspace, monkeypatch):
    make_workspace("bert")  # scoring unverified: the keys are what actually served either way
    load_checkpoint.main()
    export.main()
    infer.main()
    infer.main()
    details = json.loads(Path("metrics/infer_details.json").read_text())
    assert details["reused_rows"] == details["rows"] > 0  # the same serving: every row from the store
    serving_on(monkeypatch, "CUDAExecutionProvider")
    infer.main()
    details = json.loads(Path("metrics/infer_details.json").read_text())
    assert details["reused_rows"] == 0 and details["verification"]["served"]["provider"] == "CUDAExecutionProvider"


def test_a_ray_actor_that_serves_otherwise_than_the_run_is_keyed_for_refuses(tmp_path, monkeypatch):
    """Each actor checks on its own node; an AVX2 node in a VNNI run serves int8 through other kernels."""
    monkeypatch.chdir(tmp_path)
    served = {"runtime": "onnxruntime 1", "provider": "CPUExecutionProvider", "precision": "int8"}
    verdict = {"passed": True, "served": {**served, "cpu_kernels": "int8 exact (vnni)"}, "model_files": {"a": "1"}}
    VERDICT.parent.mkdir()
    VERDICT.write_text(json.dumps(verdict))
    node = {**served, "cpu_kernels": "int8 u8s8 (no vnni: saturates)"}
    with pytest.raises(UserError, match=r"cpu_kernels 'int8 exact \(vnni\)' verified, 'int8 u8s8"):
        check_run_member(VERDICT, {"a": "1"}, node, verdict["served"], allow_unverified=False)
    with pytest.raises(UserError, match=r"this node serves otherwise than the run's rows are keyed for"):
        check_run_member(VERDICT, {"a": "1"}, node, verdict["served"], allow_unverified=True)
    assert check_run_member(VERDICT, {"a": "1"}, verdict["served"], verdict["served"], False)["verified"]
