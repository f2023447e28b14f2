"""What a measurement depends on besides the configuration: the machine and the software."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from functools import cache
from typing import Any

import torch

import autotune

# ISA flags that change which kernels torch/oneDNN pick on x86 and ARM.
_ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "asimd", "sve", "bf16", "i8mm")


def _cpuinfo() -> tuple[str, list[str]]:
    model = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = value.split()
    except OSError:
        pass
    isa = sorted(f for f in set(flags) if f.startswith(_ISA_PREFIXES))
    return model, isa


@cache
def machine(device: str = "cpu") -> dict[str, Any]:
    """CPU model + ISA flags + core count (or GPU name + capability) and a short hash of them."""
    if device == "cuda" and not torch.cuda.is_available():  # Triton interpreter on CPU
        info: dict[str, Any] = {"gpu": "none (Triton interpreter on CPU)", "capability": "-",
                                "memory_gib": 0}
    elif device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info = {
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30),
        }
    else:
        model, isa = _cpuinfo()
        info = {"cpu": model, "isa": isa, "cores": os.cpu_count() or 1}
    info["fingerprint"] = short_hash(info)
    return info


@cache
def software(device: str = "cpu") -> dict[str, Any]:
    triton_version = None
    if device == "cuda":  # the installed version, without importing triton here
        from importlib import metadata

        with contextlib.suppress(metadata.PackageNotFoundError):
            triton_version = metadata.version("triton")
    return {
        "autotune": autotune.__version__,
        "schema": autotune.SCHEMA_VERSION,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
    }


def short_hash(obj: Any, n: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
