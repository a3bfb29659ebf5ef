"""Memory readings of this process, in MiB."""

from __future__ import annotations

import resource

import psutil


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mb() -> float:
    """This process's resident memory now."""
    return round(psutil.Process().memory_info().rss / 2**20, 1)
