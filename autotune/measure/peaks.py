"""The machine's measured ceilings for the roofline: GEMM throughput per precision and memory
bandwidth. Measured once per machine (the report stores them), with the timing loop every
other measurement uses, on large shapes that no cache holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from autotune.measure.timing import time_many

GEMM_N = 2048  # square GEMM: large enough to reach the compute roof, small enough for seconds
COPY_MIB = 256  # source of the copy: far larger than any last-level cache


def _gemm(dtype: torch.dtype, device: str) -> tuple[Callable[[], object], float]:
    n = GEMM_N
    if dtype == torch.int8:
        a = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=device)
        return (lambda: torch._int_mm(a, b)), 2.0 * n**3
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return (lambda: torch.mm(a, b)), 2.0 * n**3


def _synced(fn: Callable[[], object], device: str) -> Callable[[], object]:
    if device != "cuda":
        return fn

    def call() -> object:
        out = fn()
        torch.cuda.synchronize()
        return out
    return call


def measure_peaks(device: str = "cpu", seconds: float = 1.0) -> dict[str, Any]:
    """{"gflops": {precision: GFLOP/s}, "gbps": GB/s, "threads": n}; a precision the machine
    cannot run is left out rather than guessed."""
    sides: dict[str, tuple[list[Callable[[], object]], int]] = {}
    flops: dict[str, float] = {}
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}
    if device == "cuda":
        dtypes["float16"] = torch.float16
    for name, dtype in dtypes.items():
        try:
            fn, f = _gemm(dtype, device)
            fn()
        except (RuntimeError, NotImplementedError):
            continue
        sides[name] = ([_synced(fn, device)], 0)
        flops[name] = f
    src = torch.empty(COPY_MIB * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    sides["copy"] = ([_synced(lambda: dst.copy_(src), device)], 0)
    stats = time_many(sides, budget_s=seconds, min_rounds=5, max_rounds=50)
    moved = 2.0 * src.numel() * src.element_size()  # read + write
    return {
        "gflops": {k: flops[k] / (stats[k].median_ms * 1e-3) / 1e9 for k in flops},
        "gbps": moved / (stats["copy"].median_ms * 1e-3) / 1e9,
        "threads": torch.get_num_threads(),
    }
