"""What every Triton kernel wrapper shares: precisions and the interpreter's limits."""

from __future__ import annotations

import os

import torch
import triton

#: precision name -> (data type, ``tl.dot`` input precision). Triton's float32 dots default to
#: TF32 on a GPU, so exact float32 asks for "ieee"; 16-bit dots take the default.
DOT_PRECISION: dict[str, tuple[torch.dtype, str]] = {
    "float32": (torch.float32, "ieee"),
    "tfloat32": (torch.float32, "tf32"),
    "float16": (torch.float16, "default"),
    "bfloat16": (torch.bfloat16, "default"),
}


def interpreting() -> bool:
    """True when kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def upcast_dots(dtype: torch.dtype) -> bool:
    """The interpreter keeps bfloat16 as raw 16-bit integers in NumPy, so its ``tl.dot`` on
    bfloat16 returns garbage (triton 3.x); under it, bfloat16 tiles are widened to float32
    before the product. Loads, stores and the epilogue still see bfloat16. On a GPU the dot
    runs on bfloat16 tensor cores."""
    return dtype == torch.bfloat16 and interpreting()


def block_for(n: int, least: int = 16) -> int:
    """The power-of-two block that covers ``n`` (``tl.arange`` needs one), at least ``least``."""
    return max(least, triton.next_power_of_2(n))
