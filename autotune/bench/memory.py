"""Resident memory of this process (Linux /proc), and a resettable peak."""

from __future__ import annotations

import contextlib
import ctypes
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


def _trim() -> None:
    """Hand freed heap pages back to the kernel, so that RSS counts what is still used."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_mb() -> float | None:
    gc.collect()
    _trim()
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
