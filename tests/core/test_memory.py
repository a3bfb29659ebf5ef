"""Peak memory readings belong to the process measured, not to the process that started it."""

from __future__ import annotations

import subprocess
import sys

from stages.core.memory import peak_rss_mb, rss_mb
from tests.conftest import REPO


def test_a_child_does_not_inherit_its_parents_peak():
    ballast = bytearray(600 * 2**20)  # touched: resident in this process
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert peak_rss_mb() >= 600 and rss_mb() >= 600
    child = "from stages.core.memory import peak_rss_mb; print(peak_rss_mb())"
    printed = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, check=True)
    assert float(printed.stdout) < 300, "the child's peak must be its own"
    del ballast
