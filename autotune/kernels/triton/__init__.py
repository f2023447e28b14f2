"""Triton kernels for CUDA: the only package that imports triton.

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors in Triton's interpreter,
which is how the default test suite checks them on machines without a GPU.
"""

from __future__ import annotations

from autotune.kernels.triton.attention import flash_attention
from autotune.kernels.triton.common import DOT_PRECISION, interpreting
from autotune.kernels.triton.embeddings import TritonEmbeddings
from autotune.kernels.triton.gemm import ACTIVATIONS, GemmTiles, TritonLinear
from autotune.kernels.triton.layernorm import TritonLayerNorm

__all__ = ["ACTIVATIONS", "DOT_PRECISION", "GemmTiles", "TritonEmbeddings", "TritonLayerNorm",
           "TritonLinear", "flash_attention", "interpreting"]
