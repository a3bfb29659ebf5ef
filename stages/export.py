"""Stage `export`: the normalised model to a self-describing ONNX model with dynamic batch and sequence axes.

The ONNX directory is self-contained for serving: `model.onnx` (plus `model.onnx.data` for models
over 2 GB), the tokenizer and `config.json` (so transformers and Optimum open it), and `model.json`,
a sidecar repeating the metadata stored in the ONNX model itself (exporter, opset, input names and
dtypes, labels, max_length, truncation side, precision, library versions).
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages.core.declared import load_declared
from stages.core.runner import run_stage
from stages.graph.metadata import ONNX_FILE
from stages.graph.onnx_dir import write_onnx_dir

log = logging.getLogger(__name__)

PARAMS = ("model.output", "export")  # what this stage reads, as its params in dvc.yaml


def main() -> None:
    params = load_declared(PARAMS)
    target = Path(params.export.output)
    metadata = write_onnx_dir(Path(params.model.output), params.export, target)
    inputs = ", ".join(f"{entry['name']}:{entry['dtype']}" for entry in metadata["inputs"])
    log.info(
        "wrote %s/%s: %s exporter, opset %d, %s, inputs %s",
        target,
        ONNX_FILE,
        params.export.exporter,
        metadata["opset"],
        params.export.precision,
        inputs,
    )


if __name__ == "__main__":
    run_stage(main)
