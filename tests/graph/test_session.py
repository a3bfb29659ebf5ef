"""The CUDA paths of session creation on any host: the driver faked present, CUDA faked unable to start (as
onnxruntime-gpu without its CUDA libraries does), and what runs is what the served identity reports."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from stages.core.errors import UserError
from stages.core.params import RuntimeParams, load_params
from stages.graph import session
from stages.graph.runners import onnxruntime_identity
from stages.graph.session import CPU, CUDA, create_session, provider_of
from tests.conftest import REPO


def one_matmul(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "one_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(np.ones((4, 2), np.float32), "w")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def runtime(*providers: str, tf32: bool = False) -> RuntimeParams:
    return dataclasses.replace(load_params(REPO / "params.yaml").runtime, providers=providers, tf32=tf32)


@pytest.fixture
def cuda_that_cannot_start(monkeypatch: pytest.MonkeyPatch) -> list:
    """A driver present, CUDA's provider unable to load: sessions run on what else was asked for. The providers each
    session was asked for are recorded."""
    asked: list = []
    real = ort.InferenceSession

    def without_cuda(model, options, providers):
        asked.append(providers)
        return real(model, options, providers=[p for p in providers if (p[0] if isinstance(p, tuple) else p) != CUDA])

    monkeypatch.setattr(session, "has_nvidia_driver", lambda: True)
    monkeypatch.setattr(session.ort, "preload_dlls", lambda: None)
    monkeypatch.setattr(session.ort, "InferenceSession", without_cuda)
    return asked


@pytest.mark.parametrize("tf32", [False, True])
def test_requested_cuda_that_cannot_start_falls_back_loudly_and_binds_the_cpu(
    tmp_path, cuda_that_cannot_start, caplog, tf32
):
    settings = runtime(CUDA, CPU, tf32=tf32)
    with caplog.at_level(logging.WARNING):
        started = create_session(one_matmul(tmp_path / "m.onnx"), settings)
    assert cuda_that_cannot_start == [[(CUDA, {"use_tf32": "1" if tf32 else "0"}), CPU]]  # runtime.tf32, as asked
    assert provider_of(started) == CPU
    assert f"{CUDA} is not usable here; running on {CPU}" in caplog.text
    identity = onnxruntime_identity(provider_of(started), "fp32", settings)
    assert identity["provider"] == CPU and "tf32" not in identity and identity["cpu_kernels"] == "any"
    with pytest.raises(UserError, match=rf"asks for \['{CUDA}'\] but onnxruntime could only start {CPU}"):
        create_session(tmp_path / "m.onnx", runtime(CUDA))


def test_cuda_that_runs_is_bound_with_its_tf32_setting():
    identity = onnxruntime_identity(CUDA, "fp32", runtime(CUDA, CPU, tf32=True))
    assert identity["provider"] == CUDA and identity["tf32"] == "on" and "cpu_kernels" not in identity


def test_without_a_driver_the_default_providers_run_on_the_cpu_quietly(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(session, "has_nvidia_driver", lambda: False)
    with caplog.at_level(logging.WARNING):
        started = create_session(one_matmul(tmp_path / "m.onnx"), runtime(CUDA, CPU))
    assert provider_of(started) == CPU and not caplog.records  # the provider that ran is recorded, not warned about
    with pytest.raises(UserError, match="has no NVIDIA driver; add CPUExecutionProvider"):
        create_session(tmp_path / "m.onnx", runtime(CUDA))
