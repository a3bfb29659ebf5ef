"""Stage `export`: the normalised model to a self-describing ONNX model with dynamic batch and sequence axes.

The ONNX directory is self-contained for serving: `model.onnx` and its weights beside it in
`model.onnx.data` (which onnxruntime maps instead of copying), the tokenizer and `config.json` (so transformers and Optimum open it), and `model.json`,
a sidecar repeating the metadata stored in the ONNX model itself (exporter, opset, input names and
dtypes, labels, max_length, truncation side, precision, library versions).

An int8 model is accuracy-aware: the weight MatMuls whose quantization would fail the parity gate on
its own rows and grid stay float (`stages.quantize.policy`); `model.json` says which and why.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages.bench.choice import serving_chooser
from stages.core.atomic import write_json
from stages.core.declared import load_declared
from stages.core.runner import run_stage
from stages.graph.metadata import ONNX_FILE
from stages.graph.onnx_dir import measured, write_onnx_dir
from stages.quantize.policy import accuracy_aware_int8
from stages.verify.cases import sample_rows

log = logging.getLogger(__name__)

PARAMS = (  # what this stage reads, as its params in dvc.yaml (int8's search and runtime.backend auto judge on the
    # parity gate's inputs and tolerances)
    "model.output", "export", "runtime",
    "parity.input", "parity.samples", "parity.batch_size", "parity.seed", "parity.grid_batch_sizes",
    "parity.grid_lengths", "parity.atol", "parity.rtol", "parity.min_label_agreement", "parity.max_f1_drop",
    "parity.int8", "parity.bf16", "annotations",
    "infer.text_column", "infer.id_column", "infer.long_text", "infer.stride", "infer.span_ignore_labels",
    "infer.aggregation",
)  # fmt: skip


def main() -> None:
    params = load_declared(PARAMS)
    model_dir, target = Path(params.model.output), Path(params.export.output)
    chooser = serving_chooser(params, model_dir, sample_rows(params)) if params.runtime.backend == "auto" else None
    metadata = write_onnx_dir(model_dir, params.export, target, accuracy_aware_int8(params, model_dir), chooser)
    write_json(Path(params.export.report), measured(metadata))
    inputs = ", ".join(f"{entry['name']}:{entry['dtype']}" for entry in metadata["inputs"])
    origin = (
        f"{params.export.onnx_file} adopted"
        if metadata["exporter"] == "onnx_file"
        else f"{metadata['exporter']} exporter"
    )
    log.info(
        "wrote %s/%s: %s, opset %d, %s, inputs %s",
        target,
        ONNX_FILE,
        origin,
        metadata["opset"],
        params.export.precision,
        inputs,
    )


if __name__ == "__main__":
    run_stage(main)
