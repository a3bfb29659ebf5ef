"""The profile's GEMM FLOPs, read off onnxruntime's trace, equal the FLOP formula's count for the same batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages import export, load_checkpoint
from stages.bench.flops import flops_per_slot
from stages.core.params import load_params
from stages.graph.metadata import ONNX_FILE
from tools.bench.profile import profiled_run, summarise


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
