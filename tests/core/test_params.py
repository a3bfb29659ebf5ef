"""params.yaml is validated on load: every problem names its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages.core.errors import UserError
from stages.core.params import load_params
from tests.conftest import REPO


def write(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.model.num_labels == len(params.model.label_names) == 4
    assert params.export.opset >= 17


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["export"].update(opsett=18), r"unknown key export\.opsett; did you mean export\.opset\?"),
        (
            lambda p: p["export"].update(exporter="onnxruntime"),
            r"export\.exporter = 'onnxruntime' is not allowed; choose one of: dynamo, torchscript",
        ),
        (lambda p: p["infer"].update(batch_size=0), r"infer\.batch_size = 0 is out of range; it must be >= 1"),
        (lambda p: p["parity"].update(atol=-1e-3), r"parity\.atol = -0\.001 is out of range"),
        (lambda p: p["infer"].update(batch_size="32"), r"infer\.batch_size must be an integer, got '32'"),
        (lambda p: p["model"].update(num_labels=5), r"model\.labels has 4 names but model\.num_labels is 5"),
        (lambda p: p["model"].pop("checkpoint"), r"missing key model\.checkpoint"),
        (lambda p: p.update(extra={}), r"unknown key extra"),
        (
            lambda p: p["runtime"].update(providers=["TensorrtExecutionProvider"]),
            r"runtime\.providers\[0\] = 'TensorrtExecutionProvider' is not allowed",
        ),
        (lambda p: p["parity"].update(grid_lengths=[1, 0]), r"parity\.grid_lengths = \(1, 0\) is out of range"),
    ],
)
def test_bad_params_name_the_key(tmp_path, edit, message):
    with pytest.raises(UserError, match=message):
        load_params(write(tmp_path, edit))


def test_missing_params_file(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "params.yaml")


def test_a_user_error_exits_2_with_one_line_and_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    write(tmp_path, lambda p: p["infer"].update(batch_sise=8))
    result = subprocess.run(
        [sys.executable, "-m", "stages.load_checkpoint"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown key infer.batch_sise; did you mean infer.batch_size?"


def renamed(params: dict) -> None:
    params["infer"]["window_rows"] = params["infer"].pop("block_rows")
    params["infer"]["ray_batch_rows"] = 512
    params["infer"]["reference"] = "tools.demo.rules:rule_label"


def test_renamed_keys_still_load_for_one_release_with_a_warning(tmp_path, caplog):
    params = load_params(write(tmp_path, renamed))
    original = load_params(REPO / "params.yaml")
    assert params.infer.block_rows == original.infer.block_rows
    warnings = " ".join(record.getMessage() for record in caplog.records)
    assert "infer.window_rows is renamed infer.block_rows" in warnings
    assert "infer.ray_batch_rows is no longer used" in warnings
    assert "infer.reference is no longer used" in warnings


def test_old_and_new_name_together_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"sets both infer\.window_rows and infer\.block_rows"):
        load_params(write(tmp_path, lambda p: p["infer"].update(window_rows=8)))
