"""params.yaml is validated on load: every problem names its key."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from stages import export, infer, load_checkpoint
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
        (
            lambda p: p["infer"].update(ray_actors=4, ray_max_actors=2),
            r"infer\.ray_max_actors \(2\) is below infer\.ray_actors \(4\), the pool's starting size",
        ),
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


# Keys added in December 2026 (the OpenVINO runtime, the score store): a params file written before lacks them.
NEWER_KEYS = {
    "runtime": ("backend", "openvino_precision", "openvino_cache"),
    "parity": ("bf16",),
    "infer": ("reuse", "store"),
}


def without_newer_keys(params: dict) -> None:
    for section, keys in NEWER_KEYS.items():
        for key in keys:
            params[section].pop(key)


def test_a_params_file_of_an_earlier_version_takes_the_defaults_named_in_one_log_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        params = load_params(write(tmp_path, without_newer_keys))
    current = load_params(REPO / "params.yaml")  # which states every default
    for section, keys in NEWER_KEYS.items():
        for key in keys:
            assert getattr(getattr(params, section), key) == getattr(getattr(current, section), key), (section, key)
    lines = [record.getMessage() for record in caplog.records if "take their defaults" in record.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{tmp_path / 'params.yaml'} lacks 6 keys, which take their defaults (docs/params.md): ")
    assert "runtime.openvino_cache = 'models/.openvino-cache'" in lines[0] and "infer.reuse = True" in lines[0]
    assert "parity.bf16 = Tolerance(atol=1.0, rtol=0.2" in lines[0]


def test_a_section_a_file_lacks_takes_its_defaults_and_a_required_key_says_so(tmp_path):
    params = load_params(write(tmp_path, lambda p: p.pop("annotations")))
    assert params.annotations == load_params(REPO / "params.yaml").annotations
    with pytest.raises(UserError, match=r"^missing key parity\.input in params\.yaml; it has no default: set it"):
        load_params(write(tmp_path, lambda p: p.pop("parity")))


def test_the_stages_run_on_a_params_file_of_an_earlier_version(make_workspace, caplog):
    workspace = make_workspace()
    without_newer_keys(workspace.params)
    workspace.write_params()
    with caplog.at_level(logging.INFO):
        load_checkpoint.main()
        export.main()
        infer.main()
    metrics = json.loads(Path(workspace.params["infer"]["details"]).read_text(encoding="utf-8"))
    assert metrics["rows"] == 44 and metrics["provider"] == "CPUExecutionProvider"
    assert metrics["store"] is not None, "infer.reuse takes its default, true: the rows went to the score store"
    assert sum("lacks 6 keys, which take their defaults" in record.getMessage() for record in caplog.records) == 3
