"""Stage `export`: the normalised model to a self-describing ONNX model with dynamic batch and sequence axes.

The ONNX directory is self-contained for serving: `model.onnx` (plus `model.onnx.data` for models
over 2 GB), the tokenizer files, and `model.json`, a sidecar repeating the metadata stored in the
ONNX model itself (exporter, opset, input names and dtypes, labels, max_length, truncation side,
library versions).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from transformers import AutoTokenizer

from stages.core.atomic import atomic_directory
from stages.core.params import load_params
from stages.core.runner import run_stage
from stages.graph.exporter import export_graph
from stages.graph.metadata import ONNX_FILE, SIDECAR_FILE, stamp_metadata
from stages.graph.precision import apply_precision
from stages.model.backbone import save_tokenizer
from stages.model.directory import CONFIG_FILE, load_model_dir

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params()
    model_dir, target = Path(params.model.output), Path(params.export.output)
    model, spec = load_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    with atomic_directory(target) as staging:
        export_graph(model, params.export, staging / ONNX_FILE)
        conversion = apply_precision(staging / ONNX_FILE, params.export.precision, params.export.int8_target)
        facts = {
            "model_type": model.config.model_type,
            "labels": list(spec.labels),
            "max_length": spec.max_length,
            "truncation_side": spec.truncation_side,
            "source_checkpoint": spec.source_checkpoint,
            "source_sha256": spec.source_sha256,
            "precision_conversion": conversion,
        }
        metadata = stamp_metadata(staging / ONNX_FILE, params.export, spec.input_names, facts)
        save_tokenizer(tokenizer, staging)
        shutil.copy2(model_dir / CONFIG_FILE, staging / CONFIG_FILE)  # what Optimum and pipelines read first
        (staging / SIDECAR_FILE).write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    inputs = ", ".join(f"{entry['name']}:{entry['dtype']}" for entry in metadata["inputs"])
    log.info(
        "wrote %s/%s: %s exporter, opset %d, inputs %s",
        target,
        ONNX_FILE,
        params.export.exporter,
        metadata["opset"],
        inputs,
    )


if __name__ == "__main__":
    run_stage(main)
