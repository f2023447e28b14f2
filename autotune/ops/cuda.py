"""What the CUDA variants of every op kind share.

Three families per kind: ``triton`` kernels whose tiles the search chooses, ``torch`` (the
vendor path: cuBLAS GEMMs, torch's own LayerNorm and softmax) and ``compiled`` (torch.compile
of that torch path, for this one op). Triton is imported only when a Triton variant is built,
so registering these variants needs torch alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from autotune.models.bert import BertArch, Bucket
from autotune.ops.registry import OpFn, Tensors, compile_any_shape, precision_dtype, variant
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


TorchPath = Callable[[Tensors, Mapping[str, Value], BertArch, Bucket], Callable[[Tensors], Any]]


def torch_variants(kind: str, build: TorchPath, names: tuple[str, str] = ("torch", "compiled"),
                   ) -> None:
    """Register the torch path of an op on CUDA as two variants: as it is (``torch``) and
    compiled (``compiled``: torch.compile in the config's ``compile_mode``, default, or
    max-autotune...). Both run TF32 matmuls when the config's precision is tfloat32."""
    for name, compiled in zip(names, (False, True), strict=True):
        variant(kind, name, DEVICE)(partial(_torch_path, build, compiled))


def _torch_path(build: TorchPath, compiled: bool, w: Tensors, p: Mapping[str, Value],
                arch: BertArch, bucket: Bucket) -> OpFn:
    fn = build(w, p, arch, bucket)
    if compiled:
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
