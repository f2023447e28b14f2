"""Resident memory of this process (Linux /proc), and a resettable peak."""

from __future__ import annotations

import gc
from pathlib import Path


def _status(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    gc.collect()
    return _status("VmRSS")


def reset_peak() -> bool:
    """Reset the peak-RSS mark (VmHWM); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float | None:
    return _status("VmHWM")
