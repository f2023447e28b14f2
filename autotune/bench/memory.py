"""Resident memory of this process (Linux /proc), and a resettable peak."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from pathlib import Path

import torch

from autotune.models.bert import BertArch
from autotune.models.kinds import ELEMENT_BYTES
from autotune.ops.registry import precision_of
from autotune.runtime.config import TunedConfig
from autotune.runtime.weights import split_weights


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


def weights_at_precisions_mb(state: dict[str, torch.Tensor], arch: BertArch,
                             cfg: TunedConfig) -> float:
    """What a model's weights take at the precisions its tuned choices use: each matrix once
    per precision of its op kind's choices (float32 for a kind without one), vectors (biases,
    LayerNorm) in float32. A tuned model holding more than this holds copies."""
    total = 0
    for kind, calls in split_weights(state, arch).items():
        sizes = {ELEMENT_BYTES.get(precision_of(kind, cfg.device, c.all_params), (4, 4))[0]
                 for c in (*cfg.ops.get(kind, ()), *cfg.layer_ops.get(kind, ()))} or {4}
        for weights in calls:
            for t in weights.values():
                total += t.numel() * (sum(sizes) if t.dim() >= 2 else 4)
    return total / 2**20
