"""Build the HTML template `dvc plots show` renders with, with Vega inlined so the page renders offline.

    python -m tools.generate.plots_template      # npm pack the pinned releases, rewrite .dvc/plots/offline.html
                                        # and .dvc/plots/confusion_counts.json

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so on a machine without internet (where
batch scoring often runs) the page is blank. `.dvc/config` points `plots.html_template` at this template,
which carries the three scripts itself and no `{scripts}` placeholder, so DVC adds no CDN tags: the page
renders anywhere, and can be copied elsewhere as one file. Vega, Vega-Lite and vega-embed are BSD-3-Clause
(the Vega project, University of Washington Interactive Data Lab).

`confusion_counts` is DVC's own `confusion` template summing a `tokens` field instead of counting rows: the
demo's 330,000 scored tokens are 16 rows of counts, where the `confusion` template wants one row per token.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dvc_render.vega_templates import ConfusionTemplate

from tools.cli import NoSettings, parse

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / ".dvc" / "plots" / "offline.html"
CONFUSION_COUNTS = REPO / ".dvc" / "plots" / "confusion_counts.json"
SCRIPTS = {  # package@version -> its browser build inside the npm tarball
    "vega@5.33.1": "package/build/vega.min.js",
    "vega-lite@5.23.0": "package/build/vega-lite.min.js",
    "vega-embed@6.29.0": "package/build/vega-embed.min.js",
}
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {packages}: BSD-3-Clause, the Vega project; inlined by tools/generate/plots_template.py so that this page
         renders without a network (DVC's own page loads them from a CDN). -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def packed_script(package: str, member: str, scratch: Path) -> str:
    """The browser build of `package` from its npm tarball."""
    subprocess.run(["npm", "pack", package, "--silent"], cwd=scratch, check=True, capture_output=True)
    name, version = package.rsplit("@", 1)
    with tarfile.open(scratch / f"{name}-{version}.tgz") as archive:
        script = archive.extractfile(member).read().decode("utf-8")
    if "</script" in script or "{plot_divs}" in script:
        raise ValueError(f"{package}'s {member} cannot be inlined as it is")
    return script


def write_confusion_counts() -> None:
    """DVC's confusion template, with each cell the sum of its rows' `tokens` instead of their count."""
    template = copy.deepcopy(ConfusionTemplate.DEFAULT_CONTENT)
    aggregate = template["spec"]["transform"][0]
    if aggregate["aggregate"] != [{"op": "count", "as": "xy_count"}]:
        raise ValueError("DVC's confusion template changed: adapt write_confusion_counts to it")
    aggregate["aggregate"] = [{"op": "sum", "field": "tokens", "as": "xy_count"}]
    CONFUSION_COUNTS.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {CONFUSION_COUNTS}")


def main(argv: Sequence[str] | None = None) -> None:
    parse(NoSettings, argv, __doc__)
    write_confusion_counts()
    with tempfile.TemporaryDirectory() as scratch:
        scripts = [packed_script(package, member, Path(scratch)) for package, member in SCRIPTS.items()]
    body = "\n".join(f"    <script>\n{script}\n    </script>" for script in scripts)
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    TEMPLATE.write_text(PAGE.format(packages=", ".join(SCRIPTS), scripts=body), encoding="utf-8")
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size} bytes): {', '.join(SCRIPTS)}")


if __name__ == "__main__":
    main()
