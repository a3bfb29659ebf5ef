"""The support matrix: every backbone family x exporter x served precision, through the real stages.

Each cell runs `load_checkpoint` (a checkpoint saved the seed's way), `export` and the `parity` gate
on a tiny model of the family trained on the demo's rule labels. A cell passes the gate, or ends
in a user error (exit 2) whose one line names the unsupported combination and what to use instead.

    python -m tests.support_matrix     # run every cell and rewrite the README's support table
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stages import export, load_checkpoint, parity
from stages.core.errors import UserError
from tests.conftest import REPO, build_workspace

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


def run_family(root: Path, family: str) -> list[Outcome]:
    """Every cell of one family's row, in `root` (which becomes the working directory)."""
    os.chdir(root)
    workspace = build_workspace(root, family)
    load_checkpoint.main()
    return [run_cell(workspace, exporter, precision) for exporter in EXPORTERS for precision in PRECISIONS]


def cell_text(outcome: Outcome) -> str:
    return "✓" if outcome.passed else f"✗ {outcome.line}"


def render_row(family: str, outcomes: list[Outcome]) -> str:
    return "| " + " | ".join([FAMILIES[family], *(cell_text(outcome) for outcome in outcomes)]) + " |"


def render_table(rows: dict[str, list[Outcome]]) -> str:
    header = ["family", *(f"{exporter} {precision}" for exporter in EXPORTERS for precision in PRECISIONS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *(render_row(family, outcomes) for family, outcomes in rows.items())])


def write_readme_table(table: str, readme: Path = REPO / "README.md") -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    readme.write_text(text[:start] + "\n" + table + "\n" + text[end:], encoding="utf-8")


def main() -> None:
    rows = {}
    for family in FAMILIES:
        with tempfile.TemporaryDirectory(prefix=f"matrix-{family}-") as root:
            rows[family] = run_family(Path(root), family)
        print(render_row(family, rows[family]), file=sys.stderr)
    os.chdir(REPO)
    write_readme_table(render_table(rows))
    print(f"wrote the support table into {REPO / 'README.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
