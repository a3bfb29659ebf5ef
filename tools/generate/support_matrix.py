"""The support matrix: every backbone family x exporter x served precision, through the real stages.

Each cell runs `load_checkpoint` (a checkpoint saved the seed's way), `export` and the `parity` gate
on a tiny model of the family trained on the demo's rule labels. A cell passes the gate, or ends
in a user error (exit 2) whose one line names the unsupported combination and what to use instead.
The first column checks that `AutoModelForTokenClassification` loads the normalised model directory
and gives the project's logits, or says why the family's class is not the seed's model. The last
column is the same model given outlier channels as real pretrained encoders have them (fp32 unchanged,
full int8 fails the gate): accuracy-aware int8, with how it passed and what full int8 agreed.

    python -m tools.generate.support_matrix     # run every cell and rewrite the support table in docs/support.md
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForTokenClassification

from stages import export, load_checkpoint, parity
from stages.core.errors import UserError
from stages.model.directory import load_model_dir
from stages.model.hub import hub_layout
from tests.backbones import make_backbone
from tests.conftest import REPO, build_workspace
from tools.cli import NoSettings, parse

FAMILIES = {
    "bert": "BERT",
    "deberta-v2": "DeBERTa-v2 (mDeBERTa-v3)",
    "roberta": "RoBERTa / XLM-R",
    "distilbert": "DistilBERT",
    "electra": "ELECTRA",
    "modernbert": "ModernBERT",
}
EXPORTERS = {"dynamo": 18, "torchscript": 17}  # exporter -> opset
TYPED = ["input_ids", "attention_mask", "token_type_ids"]
EXPECTED_INPUTS = {  # the graph takes only the inputs the backbone uses
    family: TYPED if family in ("bert", "electra") else TYPED[:2] for family in FAMILIES
}
PRECISIONS = ("fp32", "int8", "fp16")
OUTLIER_CELL = ("torchscript", "int8")  # exporter, precision of the outlier model's column
HUB_ATOL = 1e-5  # fp32: the same weights in the same modules
TABLE_START, TABLE_END = "<!-- support-matrix:start -->", "<!-- support-matrix:end -->"


@dataclass(frozen=True)
class Outcome:
    """One cell: passed the parity gate, or the user error's one line."""

    exporter: str
    precision: str
    passed: bool
    line: str
    parity: dict
    sidecar: dict
    outliers: bool = False  # the model given outlier channels


def run_cell(workspace, exporter: str, precision: str) -> Outcome:
    """Export at one exporter and precision, then run the parity gate (in the workspace's directory)."""
    workspace.write_params(export={"exporter": exporter, "opset": EXPORTERS[exporter], "precision": precision})
    try:
        export.main()
        parity.main()
    except UserError as error:
        return Outcome(exporter, precision, False, str(error), {}, {})
    report = json.loads(Path(workspace.params["parity"]["report"]).read_text(encoding="utf-8"))
    sidecar = json.loads(Path(workspace.params["export"]["output"], "model.json").read_text(encoding="utf-8"))
    return Outcome(exporter, precision, True, "", report, sidecar)


def hub_outcome(workspace) -> Outcome:
    """Does AutoModelForTokenClassification load `model.output` and give the project's torch logits?"""
    directory = Path(workspace.params["model"]["output"])
    model, spec = load_model_dir(directory)
    if spec.hub_prefix is None:
        reason = hub_layout(model)
        return Outcome("transformers", "fp32", False, f"– the seed's names kept: {reason}", {}, {})
    loaded, info = AutoModelForTokenClassification.from_pretrained(directory, output_loading_info=True)
    missing_or_unexpected = info["missing_keys"] or info["unexpected_keys"]
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, model.config.vocab_size, (3, 17)))
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0
    with torch.inference_mode():
        theirs = loaded.eval()(input_ids=ids, attention_mask=mask).logits
        ours = model(ids, mask)
    largest = float((theirs - ours)[mask.bool()].abs().max())
    passed = not missing_or_unexpected and largest <= HUB_ATOL
    line = "" if passed else f"loading info {info}, max abs diff {largest:.2e}"
    return Outcome(
        "transformers", "fp32", passed, line, {"max_abs_diff": largest}, {"architecture": type(loaded).__name__}
    )


def outlier_outcome(workspace, family: str) -> Outcome:
    """The family's model given outlier channels, saved as a checkpoint, loaded, exported at int8, gated."""
    model = make_backbone(workspace.root / "backbone", family, outliers=True)
    torch.save(model.state_dict(), workspace.root / "model.ckpt")
    load_checkpoint.main()
    return dataclasses.replace(run_cell(workspace, *OUTLIER_CELL), outliers=True)


def run_family(root: Path, family: str) -> list[Outcome]:
    """Every cell of one family's row, in `root` (which becomes the working directory)."""
    os.chdir(root)
    workspace = build_workspace(root, family)
    load_checkpoint.main()
    cells = [run_cell(workspace, exporter, precision) for exporter in EXPORTERS for precision in PRECISIONS]
    hub = hub_outcome(workspace)
    return [hub, *cells, outlier_outcome(workspace, family)]


def mix_text(conversion: dict) -> str:
    """How accuracy-aware int8 passed where full int8 failed: smoothing, and the MatMuls kept float."""
    floats = ", ".join(f"`{matmul['module']}`" for matmul in conversion["float_matmuls"])
    how = "smoothed" if conversion["smoothing"] else "not smoothed"
    return f"✓ {how}, " + (f"float: {floats}" if floats else "every MatMul int8") + " (full int8: ✗)"


def cell_text(outcome: Outcome) -> str:
    if outcome.exporter == "transformers":
        return f"✓ {outcome.sidecar['architecture']}" if outcome.passed else outcome.line
    if outcome.outliers and outcome.passed:
        return mix_text(outcome.sidecar["precision_conversion"])
    return "✓" if outcome.passed else f"✗ {outcome.line}"


def render_row(family: str, outcomes: list[Outcome]) -> str:
    return "| " + " | ".join([FAMILIES[family], *(cell_text(outcome) for outcome in outcomes)]) + " |"


def render_table(rows: dict[str, list[Outcome]]) -> str:
    cells = [f"{exporter} {precision}" for exporter in EXPORTERS for precision in PRECISIONS]
    outlier_cell = "with outlier channels: {} {}".format(*OUTLIER_CELL)
    header = ["family", "Hugging Face directory (`model.output`)", *cells, outlier_cell]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *(render_row(family, outcomes) for family, outcomes in rows.items())])


SUPPORT_PAGE = REPO / "docs" / "support.md"


def write_table(table: str, readme: Path = SUPPORT_PAGE) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    readme.write_text(text[:start] + "\n" + table + "\n" + text[end:], encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parse(NoSettings, argv, __doc__)
    rows = {}
    for family in FAMILIES:
        with tempfile.TemporaryDirectory(prefix=f"matrix-{family}-") as root:
            rows[family] = run_family(Path(root), family)
        print(render_row(family, rows[family]), file=sys.stderr)
    os.chdir(REPO)
    write_table(render_table(rows))
    print(f"wrote the support table into {SUPPORT_PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
