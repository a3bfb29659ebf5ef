"""DVC knows every setting a stage reads: each stage's declared params are its params in dvc.yaml, and a stage
cannot read any other key (`stages.core.declared`)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from stages import infer
from stages.core.declared import UndeclaredParamError, declared_view
from stages.core.params import load_params
from tests.conftest import REPO


def pipeline() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


@pytest.mark.parametrize("name", sorted(pipeline()))
def test_a_stage_declares_exactly_its_params_in_dvc_yaml(name):
    declared = importlib.import_module(f"stages.{name}").PARAMS
    assert sorted(declared) == sorted(pipeline()[name]["params"]), f"stages/{name}.py PARAMS vs dvc.yaml"


def test_every_use_of_an_undeclared_key_raises():
    params = declared_view(load_params(REPO / "params.yaml"), ("model", "infer.input"))
    assert params.model.output == "models/model" and params.infer.input == "data/demo.parquet"
    uses = {
        "truth": lambda: params.runtime.intra_op_num_threads or 4,
        "path": lambda: Path(params.infer.output),
        "format": lambda: f"{params.export.opset}",
        "compare": lambda: params.parity.samples > 1,
        "iterate": lambda: list(params.runtime.providers),
        "attribute": lambda: params.parity.int8.atol,
    }
    for use, read in uses.items():
        with pytest.raises(UndeclaredParamError, match=r"is read by a stage that does not declare it"):
            read()
        assert use


def test_a_stage_reading_a_key_it_does_not_declare_fails_with_a_traceback(make_workspace, monkeypatch):
    from stages import export, load_checkpoint

    make_workspace()
    load_checkpoint.main()
    export.main()
    monkeypatch.setattr(infer, "PARAMS", ("export.output", "infer"))  # runtime left out, as the benchmark once had it
    with pytest.raises((UndeclaredParamError, TypeError), match=r"runtime\.\w+"):  # onnxruntime refuses the stand-in
        infer.main()


def test_a_declared_key_params_yaml_does_not_have_is_refused():
    with pytest.raises(UndeclaredParamError, match=r"declares infer\.no_such_key"):
        declared_view(load_params(REPO / "params.yaml"), ("infer.no_such_key",))
