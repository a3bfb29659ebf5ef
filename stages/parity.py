"""Stage `parity`: does the ONNX model compute what the torch model computes? A failure stops the pipeline.

Compared on the rows of `parity.input` tokenised and windowed exactly as `infer` does (label agreement pooled
over their tokens, their spans against torch's and, with gold annotations, each model's entity F1) and on a
grid of batch sizes x sequence lengths (values, finiteness, and labels where the tolerance protects them), over
non-pad tokens, with the session options and provider `infer` uses (`runtime.tf32` alike). The report, the plots
and the verdict (`parity.verdict`: the result bound to the served files' digests and the served identity, which
`infer` checks before it scores) are written first; then a failure exits 1 and says what to change, and where: the
failed case rerun with each layer's output exposed names the first that parts from torch's module output
(`stages.verify.layers`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from stages.core.atomic import write_json
from stages.core.declared import load_declared
from stages.core.errors import CheckFailed, UserError
from stages.core.runner import run_stage
from stages.graph.metadata import SIDECAR_FILE
from stages.graph.verdict import model_digests, write_verdict
from stages.model.directory import HEAD_FILE, load_model_dir
from stages.scoring.served import ServedModel
from stages.verify.cases import check_compatible, check_parity, gate_inputs, plot_data, sample_rows
from stages.verify.compare import build_report, case_details
from stages.verify.crf import gate_crf
from stages.verify.explain import explain_failure, format_table
from stages.verify.foreign_rows import foreign_rows_note
from stages.verify.layers import LAYER_PLOT, layer_picture
from stages.verify.where import describe_divergence

log = logging.getLogger(__name__)

PARAMS = (  # what this stage reads, as its params in dvc.yaml: rows are tokenised and windowed as infer does
    "model.output", "export.output", "runtime", "parity", "annotations",
    "infer.text_column", "infer.id_column", "infer.long_text", "infer.stride", "infer.span_ignore_labels",
    "infer.aggregation",
)  # fmt: skip


def main() -> None:
    params = load_declared(PARAMS)
    model_dir, onnx_dir = Path(params.model.output), Path(params.export.output)
    for directory, file in ((model_dir, HEAD_FILE), (onnx_dir, SIDECAR_FILE)):
        if not (directory / file).is_file():
            raise UserError(f"{directory / file} not found; run `dvc repro` so the earlier stages write it")
    model, spec = load_model_dir(model_dir)
    served = ServedModel.load(onnx_dir, params.runtime)
    check_compatible(spec, onnx_dir)
    precision = served.runner.precision  # the export's, or bf16 where OpenVINO serves an fp32 export at bf16
    tolerance = params.parity.tolerance(precision)
    crf = gate_crf(model, served.crf, onnx_dir)
    sampled = sample_rows(params)
    inputs = gate_inputs(sampled, served.tokenizer, served.framing, spec, model.config.vocab_size, params, crf)
    cases, compared = check_parity(model, served.runner.logits, inputs, tolerance)
    report = build_report(cases, tolerance, precision, served.runner.provider)
    write_json(Path(params.parity.report), report)
    write_json(Path(params.parity.details), case_details(cases))
    write_verdict(Path(params.parity.verdict), model_digests(onnx_dir), served.runner.identity, report)
    for name, rows in plot_data(compared).items():
        write_json(Path(params.parity.plots) / name, rows)
    picture = layer_picture(model, onnx_dir, params, inputs, cases, tolerance)  # where the runtimes part, per layer
    if picture is not None:
        write_json(Path(params.parity.details), {**case_details(cases), "layers": picture.details()})
    write_json(Path(params.parity.plots) / LAYER_PLOT, [] if picture is None else picture.plot_rows())
    print(format_table(cases), file=sys.stderr)
    if (note := foreign_rows_note(report, params.parity.input)) is not None:
        log.warning("%s", note)
    if not report["passed"]:
        explanation = explain_failure(cases, tolerance, precision) + ("" if note is None else f"\n{note}")
        explanation += "" if picture is None else f"\n{describe_divergence(picture)}"
        raise CheckFailed("parity failed, so the pipeline stops before infer:\n" + explanation)
    log.info(
        "parity passed for the %s model on %d cases, %d tokens, max abs diff %.2e",
        precision,
        len(cases),
        report["tokens"],
        report["max_abs_diff"],
    )


if __name__ == "__main__":
    run_stage(main)
