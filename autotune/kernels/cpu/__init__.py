"""CPU kernels built on torch, oneDNN and MKL."""

from __future__ import annotations

from autotune.kernels.cpu.gemm import Linear, make_linear
from autotune.kernels.cpu.threads import with_threads

__all__ = ["Linear", "make_linear", "with_threads"]
