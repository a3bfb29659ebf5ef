"""Accuracy-aware int8: a model with outlier channels fails the gate at full int8, and the export stage's mix passes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stages import export, load_checkpoint, parity
from stages.core.errors import CheckFailed
from stages.core.params import load_params
from stages.graph.exporter import export_graph
from stages.graph.onnx_dir import write_onnx_dir
from stages.graph.precision import prepare_for_quantization, resolve_int8_target
from stages.model.directory import load_model_dir
from stages.quantize.policy import fall_back
from stages.quantize.trials import PLAIN, MixSearch
from stages.scoring.tokens import TextTokenizer
from stages.verify.cases import gate_inputs, sample_rows
from tools.outliers import norm_readers


def outlier_workspace(make_workspace, kind: str = "bert", **export_params):
    workspace = make_workspace(kind, outliers=True)
    workspace.write_params(export={"precision": "int8", **export_params})
    load_checkpoint.main()
    return workspace


def test_outliers_fail_full_int8_and_the_accuracy_aware_export_passes(make_workspace):
    outlier_workspace(make_workspace)
    params = load_params()
    write_onnx_dir(Path(params.model.output), params.export, Path(params.export.output))  # every MatMul int8
    with pytest.raises(
        CheckFailed, match=r"rows: label agreement 0\.\d+ over \d+ tokens < parity\.int8\.min_label_agreement"
    ):
        parity.main()
    export.main()
    parity.main()
    report = json.loads(Path(params.parity.report).read_text(encoding="utf-8"))
    assert report["passed"] and report["rows_label_agreement"] >= params.parity.int8.min_label_agreement
    conversion = json.loads(Path(params.export.output, "model.json").read_text(encoding="utf-8"))[
        "precision_conversion"
    ]
    assert conversion["mix"] == "accuracy_aware" and conversion["float_matmuls"] == []
    assert conversion["quantized_weight_matmuls"] == conversion["weight_matmuls"] == 13
    smoothing = conversion["smoothing"]  # only where it pays: the last LayerNorm, which feeds the head alone
    assert (smoothing["inputs"], smoothing["folded_into_norms"], smoothing["mul_nodes"]) == (1, 1, 0), smoothing
    assert [(trial["graph"], trial["passed"]) for trial in conversion["trials"]] == [
        ("plain", False),
        ("smoothed", True),
    ]


def mix_search() -> MixSearch:
    """The export stage's search, started by hand on the workspace's model (fp32 graph, gate inputs)."""
    params = load_params()
    model, spec = load_model_dir(Path(params.model.output))
    exported, prepared = Path("fp32.onnx"), Path("prepared.onnx")
    export_graph(model, params.export, exported)
    prepare_for_quantization(exported, prepared)
    tokenizer = TextTokenizer.load(Path(params.model.output))
    framing = tokenizer.framing(spec.max_length, spec.truncation_side)
    inputs = gate_inputs(sample_rows(params), tokenizer, framing, spec, model.config.vocab_size, params)
    target = resolve_int8_target(params.export.int8_target)
    return MixSearch.start(prepared.resolve(), exported, target, inputs, params)


@pytest.mark.slow
def test_the_float_fallback_keeps_only_matmuls_that_read_outliers_and_each_one_it_keeps_is_needed(make_workspace):
    workspace = outlier_workspace(make_workspace, "modernbert", int8_max_float_share=1.0)  # pre-LN: Wqkv, mlp.Wi too
    read_outliers = {reader for _, reader in norm_readers(workspace.model)}  # the Linears given outlier inputs
    assert len(read_outliers) == 6
    workspace.write_params(  # tight values (no rtol): nothing int8 passes unless the outlier readers stay float
        parity={
            "int8": {"atol": 0.2, "rtol": 0.0, "min_label_agreement": 0.99, "max_f1_drop": 0.005, "outlier_share": 0.0}
        }
    )
    search = mix_search()
    chosen, reasons = fall_back(search, PLAIN)  # without smoothing
    assert chosen.passed
    # Which readers the gate needs float depends on the CPU's int8 kernels and the trained weights (a Wqkv's
    # error passes through softmax: 0.05-0.09 of the 0.2 allowed on an AVX2-only EPYC, over it on another CPU); that
    # only readers are kept float, the head among them and the embedding not, holds on any of them.
    floats = set(search.names(chosen.floats))
    assert "fc" in floats and len(floats) > 1 and floats <= read_outliers, sorted(floats)
    assert "quantizing it too fails the gate" in reasons[search.head]
    ranked = [node for node in chosen.floats if node != search.head]  # a prefix of the ranking, bisected
    assert all(
        f"with only the first {len(ranked) - 1} of the ranking float the gate fails" in reasons[node] for node in ranked
    ), reasons
    search.bound = search.share(chosen.floats) * 0.99
    with pytest.raises(CheckFailed, match=r"at most export\.int8_max_float_share = 0\.\d+ of their work"):
        fall_back(search, PLAIN)


def test_no_mix_within_the_bound_fails_the_export_in_one_line(make_workspace):
    workspace = outlier_workspace(make_workspace, int8_max_float_share=0.0)  # nothing may stay float...
    workspace.write_params(
        parity={
            "int8": {
                "atol": 0.001,
                "rtol": 0.0,
                "min_label_agreement": 0.99,
                "max_f1_drop": 0.005,
                "outlier_share": 0.0,
            }
        }
    )  # ...too strict
    with pytest.raises(CheckFailed) as failure:
        export.main()
    message = str(failure.value)
    assert "\n" not in message and "export.int8_max_float_share = 0 " in message, message
    assert "the best (0 of 13 MatMuls float, 0% of the work, label agreement 1.0000, rows 1.0000)" in message, message
    assert "fails values (rows: " in message and "its labels alone would have passed" in message, message
    grid = (
        r"values \(the grid pooled: \d+ of \d+ tokens beyond tolerance, 0 allowed; max \|diff\| \S+ in grid \d+x\d+\)"
    )
    assert re.search(grid, message) and message.count("grid pooled") == 1, message  # judged pooled, said once
    assert not Path(load_params().export.output).exists()
