"""`dvc plots show` writes a page that renders without a network: its scripts are in it, and so is every plot's data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import yaml

from tests.conftest import REPO

PLOTS_FILES = ("dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvc/plots", "metrics")
GLOBALS = (".vega={}", ".vegaLite={}", ".vegaEmbed=")  # what each inlined UMD build defines on the page
SPEC = re.compile(r"var spec = (\{.*?\});\s*vegaEmbed\('#([^']+)'", re.DOTALL)


def plot_ids() -> set[str]:
    """The id DVC gives each plot that dvc.yaml declares (its path with / and . as _)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    paths = [
        next(iter(entry)) if isinstance(entry, dict) else entry
        for stage in stages.values()
        for entry in stage.get("plots", [])
    ]
    resolved = [re.sub(r"\$\{(\w+)\.(\w+)\}", lambda match: params[match[1]][match[2]], path) for path in paths]
    return {re.sub(r"[/.]", "_", path) for path in resolved}


def test_dvc_plots_show_writes_a_page_that_needs_no_network(tmp_path):
    for name in PLOTS_FILES:
        source, target = REPO / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    environment = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", "page"], cwd=tmp_path, env=environment,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    page = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", page) and "//cdn." not in page  # nothing fetched at view time
    assert all(definition in page for definition in GLOBALS)
    specs = {plot: json.loads(spec) for spec, plot in SPEC.findall(page)}
    assert set(specs) == plot_ids()
    for plot, spec in specs.items():
        assert spec["data"]["values"], f"{plot} has no data points"
