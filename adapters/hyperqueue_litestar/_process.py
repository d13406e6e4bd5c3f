"""Figures about this process that the health checks and the metrics share."""

from __future__ import annotations

import resource
import sys

__all__ = ["resident_bytes"]


def resident_bytes() -> float:
    """Resident memory now from /proc where there is one, else the peak (getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return float(pages * resource.getpagesize())
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if sys.platform == "darwin" else peak * 1024)
