"""What the CUDA variants of every op kind share.

Three families per kind: ``triton`` kernels whose tiles the search chooses, ``torch`` (the
vendor path: cuBLAS GEMMs, torch's own LayerNorm and softmax) and ``compiled`` (torch.compile
of that torch path, for this one op). Triton is imported only when a Triton variant is built,
so registering these variants needs torch alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from autotune.ops.registry import OpFn, Tensors, compile_any_shape, precision_dtype
from autotune.space import Value

if TYPE_CHECKING:
    from autotune.kernels.triton import GemmTiles, TritonLayerNorm, TritonLinear

DEVICE = "cuda"
#: bytes per element of each precision's data (tfloat32 keeps float32 data)
PRECISION_BYTES = {"float32": 4, "tfloat32": 4, "float16": 2, "bfloat16": 2}


def cast(w: Tensors, p: Mapping[str, Value]) -> Tensors:
    """Every weight in the config's data type, laid out contiguously, once."""
    dtype = precision_dtype(p)
    return {k: v.detach().to(dtype).contiguous() for k, v in w.items()}


def vendor(fn: Callable[[Tensors], Any], p: Mapping[str, Value]) -> OpFn:
    """The torch path of an op as a variant: TF32 matmuls when asked for, compiled for the
    ``compiled`` variant. ``compile_mode`` is torch.compile's mode (default, max-autotune...)."""
    if p["variant"] == "compiled":
        fn = compile_any_shape(fn, str(p.get("compile_mode", "default")))
    if p.get("precision") != "tfloat32":
        return fn

    def tf32(inputs: Tensors) -> Any:
        # A process-wide switch, read when each matmul launches: set for this op only.
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return fn(inputs)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev

    return tf32


def tiles(p: Mapping[str, Value]) -> GemmTiles:
    from autotune.kernels.triton import GemmTiles

    return GemmTiles(int(p["block_m"]), int(p["block_n"]), int(p["block_k"]),
                     int(p["group_m"]), int(p["num_warps"]), int(p["num_stages"]),
                     int(p.get("split_k", 1)))


def triton_linear(w: Tensors, p: Mapping[str, Value], activation: str = "none",
                  head_split: tuple[int, int] | None = None, prefix: str = "") -> TritonLinear:
    from autotune.kernels.triton import TritonLinear

    return TritonLinear(w[f"{prefix}weight"], w[f"{prefix}bias"], str(p["precision"]), tiles(p),
                        activation, head_split)


def triton_layer_norm(w: Tensors, p: Mapping[str, Value], eps: float) -> TritonLayerNorm:
    from autotune.kernels.triton import TritonLayerNorm

    return TritonLayerNorm(w["ln_weight"], w["ln_bias"], eps, int(p["ln_rows"]),
                           int(p["ln_warps"]))
