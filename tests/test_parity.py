"""The parity gate: honest statistics over non-pad tokens, and a stop that explains itself."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from stages import export, load_checkpoint, parity
from stages.core.errors import CheckFailed, UserError
from stages.core.params import load_params
from tests.conftest import REPO


def exported(make_workspace, kind: str = "deberta-v2", exporter: str = "torchscript"):
    workspace = make_workspace(kind)
    workspace.write_params(export={"exporter": exporter, "opset": 18 if exporter == "dynamo" else 14})
    load_checkpoint.main()
    export.main()
    return workspace


def test_correct_export_passes_and_reports_every_case(
    make_workspace, caplog
):  # every family: tests/tools/test_support_matrix.py
    exported(make_workspace)
    with caplog.at_level(logging.WARNING):
        parity.main()
    assert "made for another model" not in caplog.text, "the rows are the model's own task's"
    report = json.loads(Path("metrics/parity.json").read_text())
    assert report["passed"] and report["label_agreement"] == 1.0 and report["max_abs_diff"] < 1e-4
    cases = json.loads(Path("metrics/parity_cases.json").read_text())
    assert {"rows", "grid 1x1", "grid 3x128"} <= set(cases) and "cases" not in report  # the detail is apart
    assert cases["rows"]["tokens"] > 100 and report["rows_label_agreement"] == cases["rows"]["label_agreement"]
    by_length = json.loads(Path("metrics/parity_plots/max_diff_by_length.json").read_text())
    assert {1, 2, 7, 64, 128} <= {point["length"] for point in by_length}
    histogram = json.loads(Path("metrics/parity_plots/diff_histogram.json").read_text())
    assert sum(bin_["tokens"] for bin_ in histogram) == report["tokens"]


def edit_graph(edit) -> None:
    path = Path("models/onnx/model.onnx")
    graph = onnx.load(path)
    edit(graph)
    onnx.save(graph, path)


def perturb_one_weight(graph: onnx.ModelProto) -> None:
    """Add 1e-2 to one weight of the head (the only matrix with a dimension of 4 labels)."""
    initializer = next(item for item in graph.graph.initializer if len(item.dims) == 2 and 4 in item.dims)
    weights = numpy_helper.to_array(initializer).copy()
    weights.flat[0] += 1e-2
    initializer.CopyFrom(numpy_helper.from_array(weights, initializer.name))


def bake_sequence_length(graph: onnx.ModelProto) -> None:
    """Add 0.05 x (sequence length - 6) to the logits: right at the dummy length only, like a traced constant."""
    output = graph.graph.output[0].name
    graph.graph.node[-1].output[0] = "logits_before_bug"
    graph.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(value, dtype=dtype), name)
            for name, value, dtype in (("one", 1, np.int64), ("six", 6.0, np.float32), ("scale", 0.05, np.float32))
        ]
    )
    graph.graph.node.extend(
        [
            helper.make_node("Shape", ["input_ids"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["length"]),
            helper.make_node("Cast", ["length"], ["length_float"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Sub", ["length_float", "six"], ["offset"]),
            helper.make_node("Mul", ["offset", "scale"], ["error"]),
            helper.make_node("Add", ["logits_before_bug", "error"], [output]),
        ]
    )


def test_one_perturbed_weight_fails_and_the_report_is_written_first(make_workspace):
    exported(make_workspace)
    edit_graph(perturb_one_weight)
    with pytest.raises(CheckFailed, match=r"rows: \d+ of \d+ tokens have logits beyond atol"):
        parity.main()
    report = json.loads(Path("metrics/parity.json").read_text())
    assert report["passed"] is False and "rows: values" in report["failures"]


def test_sequence_length_baked_in_passes_at_the_dummy_length_and_fails_elsewhere(make_workspace):
    workspace = exported(make_workspace)
    workspace.write_params(parity={"grid_lengths": [6, 7, 64]})
    edit_graph(bake_sequence_length)
    with pytest.raises(CheckFailed, match="grid 1x7"):
        parity.main()
    cases = json.loads(Path("metrics/parity_cases.json").read_text())
    assert cases["grid 1x6"]["passed"] and cases["grid 3x6"]["passed"]
    assert not cases["grid 1x7"]["passed"] and not cases["grid 3x64"]["passed"]


def test_onnx_model_with_other_label_count_is_one_clear_error(make_workspace):
    exported(make_workspace)

    def drop_a_label(graph: onnx.ModelProto) -> None:
        graph.graph.node[-1].output[0] = "all_labels"
        graph.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([value], dtype=np.int64), name)
                for name, value in (("start", 0), ("end", 3), ("axis", 2))
            ]
        )
        graph.graph.node.append(helper.make_node("Slice", ["all_labels", "start", "end", "axis"], ["logits"]))
        graph.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 3

    edit_graph(drop_a_label)
    with pytest.raises(
        UserError,
        match=r"does not match the torch model.*\n  outputs: onnx \[\('logits', \['batch', 'sequence', 3\]\)\]",
    ):
        parity.main()


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_the_served_precision_is_what_parity_checks(make_workspace, precision):
    # The workspace model is trained: its labels win by wide margins, so the default floors hold on any CPU.
    workspace = make_workspace("deberta-v2")
    workspace.write_params(export={"precision": precision})
    load_checkpoint.main()
    export.main()
    sidecar = json.loads(Path("models/onnx/model.json").read_text())
    assert sidecar["precision"] == precision
    if precision == "int8":  # every MatMul whose B input is a weight is quantized
        conversion = sidecar["precision_conversion"]
        assert conversion["quantized_weight_matmuls"] == conversion["weight_matmuls"] > 0
        assert conversion["float_weight_matmuls"] == 0
        assert conversion["int8_target"] in ("vnni", "no_vnni")
        assert conversion["reduce_range"] == (conversion["int8_target"] == "no_vnni")
    parity.main()
    report = json.loads(Path("metrics/parity.json").read_text())
    tolerance = load_params().parity.tolerance(precision)
    assert report["passed"] and report["precision"] == precision and report["atol"] == tolerance.atol
    assert report["label_agreement"] >= tolerance.min_label_agreement
    assert report["max_abs_diff"] > 1e-6  # really a different model from the fp32 one


@pytest.mark.parametrize("target", ["vnni", "no_vnni"])
def test_int8_target_decides_the_weight_range_and_is_recorded(make_workspace, target):
    workspace = make_workspace("bert")
    workspace.write_params(export={"precision": "int8", "int8_target": target})
    load_checkpoint.main()
    export.main()
    conversion = json.loads(Path("models/onnx/model.json").read_text())["precision_conversion"]
    assert (conversion["int8_target"], conversion["reduce_range"]) == (target, target == "no_vnni")
    assert conversion["int8_target_chosen_by"] == "export.int8_target"
    weights = [
        numpy_helper.to_array(item)
        for item in onnx.load("models/onnx/model.onnx").graph.initializer
        if item.data_type == onnx.TensorProto.INT8 and len(item.dims) == 2
    ]
    largest = max(int(np.abs(weight).max()) for weight in weights)
    assert largest == (64 if target == "no_vnni" else 127)  # 7-bit weights where VNNI is missing


def test_a_failing_int8_model_names_the_int8_tolerance(make_workspace):
    workspace = make_workspace("deberta-v2")
    workspace.write_params(export={"precision": "int8"})
    load_checkpoint.main()
    export.main()  # exported for the default tolerance, checked against a stricter one
    workspace.write_params(
        parity={
            "int8": {"atol": 0.0, "rtol": 0.0, "min_label_agreement": 1.0, "max_f1_drop": 0.0, "outlier_share": 0.0}
        }
    )
    with pytest.raises(CheckFailed, match=r"parity\.int8\.atol would need >= "):
        parity.main()


def test_the_demos_rows_gating_another_model_are_reported_in_one_line(make_workspace, caplog):
    """A model fine-tuned for another task with the same label names (the trained model's NUMBER, CAPITALIZED and CJK
    rows of its head rotated: as confident, on another rule) gated on the demo's validation rows, params.yaml's."""
    workspace = make_workspace()
    state = torch.load(workspace.root / "model.ckpt")
    rotation = [0, 2, 3, 1]
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][rotation], state["fc.bias"][rotation]
    torch.save(state, workspace.root / "model.ckpt")
    demo_rows = str(REPO / "data/validation.parquet")
    workspace.write_params(parity={"input": demo_rows})
    load_checkpoint.main()
    export.main()
    with caplog.at_level(logging.WARNING):
        parity.main()  # torch and onnxruntime agree: the gate passes, on rows that say little about this model
    report = json.loads(Path("metrics/parity.json").read_text())
    assert report["passed"] and report["entity_f1_torch"] < 0.1, report
    notes = [record.getMessage() for record in caplog.records if "made for another model" in record.getMessage()]
    assert notes == [
        f"the torch model itself reaches entity F1 {report['entity_f1_torch']:.3f} against the gold of parity.input = "
        f"{demo_rows}: these rows look made for another model (params.yaml ships the demo's, data/validation.parquet); "
        "set parity.input to your own validation rows (labelled with the model's labels, or not labelled)"
    ]

    workspace.write_params(model={"labels": ["O", "PER", "LOC", "MISC"]})  # a model of other entities
    load_checkpoint.main()
    with pytest.raises(UserError) as raised:
        parity.main()
    assert str(raised.value) == (
        f"parity.input = {demo_rows} was labelled for another model: its gold labels (CAPITALIZED, CJK, NUMBER) are "
        "none of this model's entities (LOC, MISC, PER); set parity.input to your own validation rows (labelled with "
        "the model's labels, or not labelled)"
    )
