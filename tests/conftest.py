"""Shared fixtures: a workspace with a tiny backbone, its checkpoint, a dataset and a params.yaml."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pandas as pd
import pytest
import torch
import yaml

from stages.model.token_model import CustomModel
from tests.backbones import CORPUS, make_backbone
from tests.layouts import write_layout
from tools.demo.rules import DEMO_LABELS, entity_spans

REPO = Path(__file__).resolve().parents[1]


def unavailable(reason: str) -> NoReturn:
    """A test that cannot run here: a failure under CI (`CI=true`), where it must run; a skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"this test must run in CI but cannot: {reason}")
    pytest.skip(reason)


def loopback_namespaces_usable() -> str | None:
    """Why a private loopback-only cluster cannot run here, or None if it can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "ip", "link", "set", "lo", "up"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        return "cannot create network/PID namespaces (needs root or user namespaces)"
    return None


@dataclass
class Workspace:
    root: Path
    model: CustomModel
    params: dict

    def write_params(self, **overrides: dict) -> None:
        """Write params.yaml with some sections' keys replaced."""
        for section, values in overrides.items():
            self.params[section].update(values)
        (self.root / "params.yaml").write_text(yaml.safe_dump(self.params, allow_unicode=True), encoding="utf-8")


def sample_texts(rows: int) -> list[str | None]:
    """Mixed-script texts of varied length, with empty, blank and null rows."""
    texts: list[str | None] = []
    for index in range(rows):
        sentence = CORPUS[index % len(CORPUS)]
        texts.append(" ".join([sentence] * (index % 7)))
    return [*texts, "", "   ", None, "\x00\x1b\u200b\u202e"]


def build_workspace(
    root: Path, kind: str = "deberta-v2", rows: int = 40, layout: str | None = None, outliers: bool = False
) -> Workspace:
    """Write a tiny backbone (of `kind`, or in one of `tests.layouts.LAYOUTS`), its checkpoint (of the model with
    outlier channels, if asked), a dataset and params.yaml under `root` (the stages' cwd)."""
    model = (
        make_backbone(root / "backbone", kind, outliers=outliers)
        if layout is None
        else write_layout(root / "backbone", layout)
    )
    texts = sample_texts(rows)
    entities = [entity_spans(text or "") for text in texts]  # gold spans, by the demo's rule
    frame = pd.DataFrame({"id": [f"row-{index}" for index in range(len(texts))], "text": texts, "entities": entities})
    return write_workspace(root, model, DEMO_LABELS, frame)


def write_workspace(root: Path, model: CustomModel, labels: tuple[str, ...], frame: pd.DataFrame) -> Workspace:
    """Write the checkpoint of `model` (its backbone files are in `root / "backbone"`), the dataset `frame` and
    params.yaml under `root`."""
    torch.save(model.state_dict(), root / "model.ckpt")
    frame.to_parquet(root / "data.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["model"].update(
        backbone=str(root / "backbone"),
        checkpoint=str(root / "model.ckpt"),
        num_labels=len(labels),
        labels=list(labels),
        max_length=128,
    )
    # The TorchScript exporter takes a second where dynamo takes ten; tests about the exporters choose their own.
    params["export"].update(exporter="torchscript", opset=17)
    params["runtime"].update(providers=["CPUExecutionProvider"], intra_op_num_threads=1)
    params["parity"].update(  # a passing gate's per-layer picture costs a third more: tests about it ask for it
        input=str(root / "data.parquet"),
        samples=24,
        batch_size=8,
        grid_batch_sizes=[1, 3],
        grid_lengths=[1, 2, 7, 64, 128],
        layer_tokens=0,
    )
    # Windows of 126 content tokens overlap by 32 (128 would not advance). The scoring tests run infer without the
    # gate before it (allow_unverified: warned, recorded); the verdict's own tests turn it off.
    params["infer"].update(
        input=str(root / "data.parquet"), output="out/predictions.parquet", batch_size=8, block_rows=16, stride=32,
        allow_unverified=True,
    )  # fmt: skip
    workspace = Workspace(root=root, model=model, params=params)
    workspace.write_params()
    return workspace


@pytest.fixture
def make_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Build a workspace for one backbone family and chdir into it."""

    def build(kind: str = "deberta-v2", rows: int = 40, layout: str | None = None, outliers: bool = False) -> Workspace:
        monkeypatch.chdir(tmp_path)
        return build_workspace(tmp_path, kind, rows, layout, outliers)

    return build
