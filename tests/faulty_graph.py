"""A broken export for the fault tests: a graph that fails at run time on some token ids, so scoring raises from
inside onnxruntime in the blocks that hold them (as a graph whose lookup table is too short would)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def fail_on_token_ids(path: Path, failing: Iterable[int], vocab_size: int) -> None:
    """Rewrite the ONNX model at `path` so that a batch holding any of the `failing` token ids fails (a Gather out of
    bounds); other batches give the logits they gave before."""
    model = onnx.load(str(path))
    graph = model.graph
    output = graph.output[0].name
    last = next(node for node in graph.node if output in node.output)
    last.output[list(last.output).index(output)] = "logits_before_fault"
    rows = np.zeros(vocab_size, dtype=np.int64)
    rows[list(failing)] = vocab_size  # no such row in the table below
    graph.initializer.extend(
        [
            numpy_helper.from_array(rows, "fault_rows"),
            numpy_helper.from_array(np.zeros(1, dtype=np.float32), "fault_table"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "fault_axis"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Gather", ["fault_rows", "input_ids"], ["fault_indices"]),
            helper.make_node("Gather", ["fault_table", "fault_indices"], ["fault_zeros"]),
            helper.make_node("Unsqueeze", ["fault_zeros", "fault_axis"], ["fault_column"]),
            helper.make_node("Add", ["logits_before_fault", "fault_column"], [output]),
        ]
    )
    onnx.save(model, str(path))
