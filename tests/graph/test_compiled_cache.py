"""`runtime.openvino_cache`: what OpenVINO compiled is loaded by the next process, and never for another export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages.graph import compiled_cache
from stages.graph.compiled_cache import READY_FILE, compile_cache, export_identity
from stages.graph.runners import compile_openvino
from tests.graph.test_runners import needs_openvino

SIZE = 1024
CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}


def write_export(onnx_dir: Path, offset: float) -> Path:
    """An export of `y = x + c` whose constant `c` lies beside the graph, as the export stage stores weights; written
    into a staging directory renamed over `onnx_dir`, as the export stage writes it."""
    staging = onnx_dir.with_name(onnx_dir.name + ".staging")
    staging.mkdir(parents=True)
    constant = numpy_helper.from_array(np.full(SIZE, offset, np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [SIZE])],
        [constant],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, staging / "model.onnx", save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    shutil.rmtree(onnx_dir, ignore_errors=True)
    staging.rename(onnx_dir)
    return onnx_dir / "model.onnx"


def served(path: Path, cache: Path) -> tuple[float, bool]:
    """What the model at `path` adds to zeros, and whether OpenVINO loaded it from `cache` instead of compiling it."""
    import openvino as ov

    compiled = compile_openvino(ov.Core(), path, CONFIG, cache, ov.__version__)
    added = compiled.create_infer_request().infer([np.zeros(SIZE, np.float32)])[compiled.output(0)]
    return float(added[0]), bool(compiled.get_property("LOADED_FROM_CACHE"))


def test_what_one_process_compiled_the_next_loads(tmp_path):
    needs_openvino()
    path, cache = write_export(tmp_path / "onnx", 1.0), tmp_path / "cache"
    assert served(path, cache) == (1.0, False)
    assert served(path, cache) == (1.0, True)
    (directory,) = cache.glob("*/*/")
    assert (directory / READY_FILE).exists() and list(directory.glob("*.blob"))
    assert (cache / ".gitignore").read_text() == "*\n"


@pytest.mark.parametrize("hashed_bytes", [compiled_cache.HASHED_BYTES, 0], ids=["graph hashed", "files by inode"])
def test_an_export_written_again_at_the_same_path_is_compiled_again(tmp_path, monkeypatch, hashed_bytes):
    """OpenVINO keys a model read from a file by its path: without the export's identity, the second export would
    be served by the first one's compiled model."""
    needs_openvino()
    monkeypatch.setattr(compiled_cache, "HASHED_BYTES", hashed_bytes)
    onnx_dir, cache = tmp_path / "onnx", tmp_path / "cache"
    assert served(write_export(onnx_dir, 1.0), cache) == (1.0, False)
    assert served(write_export(onnx_dir, 2.0), cache) == (2.0, False)
    assert served(onnx_dir / "model.onnx", cache) == (2.0, True)
    assert len(list(cache.glob("*/*/"))) == 1  # the first export's compiled model is gone


def test_a_compile_that_did_not_return_is_not_loaded(tmp_path):
    needs_openvino()
    import openvino as ov

    path, cache = write_export(tmp_path / "onnx", 3.0), tmp_path / "cache"
    with compile_cache(path, cache, ov.__version__) as directory:
        pass
    (directory / READY_FILE).unlink()  # as if the process had been killed while OpenVINO wrote its file
    (directory / "cut-short.blob").write_bytes(b"\0" * 100)
    assert served(path, cache) == (3.0, False)
    assert not (directory / "cut-short.blob").exists() and (directory / READY_FILE).exists()
    assert directory.name == export_identity(path.parent, ov.__version__)
