"""The profile's GEMM FLOPs, read off onnxruntime's trace, equal the FLOP formula's count for the same batches;
OpenVINO's counters give each batch its op types."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages import export, load_checkpoint
from stages.bench.flops import flops_per_slot
from stages.core.params import load_params
from stages.graph.metadata import ONNX_FILE
from stages.scoring.served import ServedModel
from tests.graph.test_runners import needs_openvino
from tools.bench.profile import infer_batches, openvino_profiled_run, profiled_run, summarise


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_gemm_flops_from_the_trace_equal_the_formula(make_workspace, tmp_path, kind):
    workspace = make_workspace(kind)
    load_checkpoint.main()
    export.main()
    params = load_params()  # graph_optimization_level all, as infer runs: fused MatMuls are counted too
    rng = np.random.default_rng(0)
    shapes = [(3, 17), (1, 64), (8, 5)]
    batches = [
        {
            "input_ids": rng.integers(5, 200, shape),
            "attention_mask": np.ones(shape, np.int64),
            "token_type_ids": np.zeros(shape, np.int64),
        }
        for shape in shapes
    ]
    results = profiled_run(Path(params.export.output) / ONNX_FILE, params, batches, tmp_path)
    for (rows, length), result in zip(shapes, results, strict=True):
        assert tuple(result["shape"]) == (rows, length)
        assert sum(result["gemm_flops"].values()) == flops_per_slot(workspace.model.config, 4, length) * rows * length
        assert set(result["gemm_flops"]) == {"float"}  # an fp32 model
    summary = summarise(results, {"int8": 200.0, "float": 100.0})
    assert sum(entry["share"] for entry in summary["ops"].values()) <= 1.0 + 1e-9
    assert set(summary["shapes"]) == {"3x17", "1x64", "8x5"}


def test_openvino_counters_give_each_batch_its_op_types_and_infer_batches_cover_every_row(make_workspace, tmp_path):
    needs_openvino()
    workspace = make_workspace("deberta-v2")
    workspace.write_params(infer={"long_text": "truncate"})  # one window per row, the long one cut
    load_checkpoint.main()
    export.main()
    params = load_params()
    texts = ["a short text", "a somewhat longer text with more words in it", "x", "the quick brown fox " * 40]
    dataset = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": [f"r{index}" for index in range(len(texts))], "text": texts}), dataset)
    onnx_dir = Path(params.export.output)
    served = ServedModel.load(onnx_dir, dataclasses.replace(params.runtime, backend="openvino", openvino_cache=None))
    batches = infer_batches(params, served, dataset)
    assert sum(len(batch["input_ids"]) for batch in batches) == len(texts)  # one window per row
    results = openvino_profiled_run(onnx_dir / ONNX_FILE, params, batches, "f32")
    assert [tuple(result["shape"]) for result in results] == [batch["input_ids"].shape for batch in batches]
    for result in results:
        assert result["seconds"] == sum(result["ops"].values()) > 0 and "MatMul" in result["ops"], result
    summary = summarise(results, {"int8": 200.0, "float": 100.0})
    assert sum(entry["share"] for entry in summary["ops"].values()) == pytest.approx(1.0), summary["ops"]
