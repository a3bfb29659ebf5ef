"""Memory readings of this process, in MiB."""

from __future__ import annotations

import resource
from pathlib import Path

import psutil

STATUS = Path("/proc/self/status")


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started.

    On Linux that is `VmHWM`, which `exec` resets: `ru_maxrss` would instead carry over the peak of
    the process that forked this one (a benchmark holding a model would lend its gigabytes to every
    child it measures).
    """
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass  # not Linux: ru_maxrss (kilobytes on Linux and BSD)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mb() -> float:
    """This process's resident memory now."""
    return round(psutil.Process().memory_info().rss / 2**20, 1)
