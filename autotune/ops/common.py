"""Helpers shared by the operator kinds: random weights/inputs and the GEMM parameter map."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn.functional as F

from autotune.kernels.cpu import Linear, make_linear
from autotune.models.bert import BertArch, Bucket
from autotune.ops.registry import OpFn, variant
from autotune.space import Value

Tensors = dict[str, torch.Tensor]


def randn(shape: tuple[int, ...], gen: torch.Generator, std: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen) * std


def dense(n: int, k: int, gen: torch.Generator, prefix: str = "") -> Tensors:
    """A linear layer initialised like HF BERT (std 0.02), with a non-zero bias."""
    return {f"{prefix}weight": randn((n, k), gen, 0.02), f"{prefix}bias": randn((n,), gen, 0.02)}


def layer_norm(n: int, gen: torch.Generator) -> Tensors:
    return {"ln_weight": 1.0 + randn((n,), gen, 0.1), "ln_bias": randn((n,), gen, 0.1)}


#: BERT's hidden states carry a few outlier dimensions, several times larger than the rest
#: (Kovaleva et al. 2021, Bondarenko et al. 2021). They are what breaks per-tensor int8
#: activation quantization, so the correctness gate must see them: without them int8 looks
#: as accurate as bfloat16 on random data, and fails on real weights.
OUTLIER_EVERY = 256
OUTLIER_SCALE = 6.0


def hidden(arch: BertArch, bucket: Bucket, gen: torch.Generator, width: int | None = None,
           ) -> torch.Tensor:
    """Activations shaped (batch, seq, width) with unit variance and a few outlier channels."""
    width = width or arch.hidden_size
    x = randn((bucket.batch, bucket.seq, width), gen)
    n = max(1, width // OUTLIER_EVERY)
    channels = torch.randperm(width, generator=gen)[:n]
    x[..., channels] *= OUTLIER_SCALE
    return x


def lengths(bucket: Bucket, gen: torch.Generator) -> torch.Tensor:
    """Real lengths of a padded batch: the first sequence is full, the others random."""
    lens = torch.randint(max(1, bucket.seq // 4), bucket.seq + 1, (bucket.batch,), generator=gen)
    lens[0] = bucket.seq
    return lens


def rows(bucket: Bucket) -> int:
    return bucket.batch * bucket.seq


def dense_linear(weights: Tensors, params: Mapping[str, Value], rows: int,
                 epilogue: str = "none", prefix: str = "") -> Linear:
    """The ``dense`` variants' linear layer: float32 or bfloat16, through the GEMM library
    and weight layout ``impl`` names."""
    return make_linear(
        weights[f"{prefix}weight"], weights[f"{prefix}bias"], precision=str(params["precision"]),
        impl=str(params["impl"]), rows=rows, row_block=int(params.get("row_block", 0)),
        epilogue=epilogue, fuse_epilogue=bool(params.get("fuse_epilogue", False)),
    )


def int8_linear(weights: Tensors, params: Mapping[str, Value], rows: int,
                epilogue: str = "none", prefix: str = "") -> Linear:
    """The ``int8_dynamic`` variants' linear layer: int8 weights, activations quantized per
    call by the quantized engine ``qengine`` names."""
    return make_linear(
        weights[f"{prefix}weight"], weights[f"{prefix}bias"], precision="int8_dynamic",
        rows=rows, epilogue=epilogue, qengine=str(params["qengine"]),
        per_channel=params["granularity"] == "per_channel",
        reduce_range=bool(params["reduce_range"]), row_block=int(params.get("row_block", 0)),
    )


def int8_token_linear(weights: Tensors, params: Mapping[str, Value], rows: int,
                      epilogue: str = "none", prefix: str = "") -> Linear:
    """The ``int8_token`` variants' linear layer: int8 weights per output channel, activations
    quantized per token at each call, s8×s8 GEMM."""
    return make_linear(
        weights[f"{prefix}weight"], weights[f"{prefix}bias"], precision="int8_token",
        rows=rows, epilogue=epilogue, row_block=int(params.get("row_block", 0)),
    )


LinearMaker = Callable[..., Linear]
GemmBuilder = Callable[[Tensors, Mapping[str, Value], BertArch, Bucket, LinearMaker], OpFn]


def gemm_variants(kind: str, build: GemmBuilder) -> None:
    """Register a GEMM kind's CPU variants, ``dense``, ``int8_dynamic`` and ``int8_token``:
    ``build`` gets the variant's linear-layer maker, called as
    ``linear(weights, params, rows, epilogue, prefix)``."""
    for name, linear, precision in (("dense", dense_linear, None),
                                    ("int8_dynamic", int8_linear, _int8),
                                    ("int8_token", int8_token_linear, _int8)):
        variant(kind, name, precision=precision)(partial(_with_linear, build, linear))


def _int8(params: Mapping[str, Value]) -> str:
    return "int8"


def _with_linear(build: GemmBuilder, linear: LinearMaker, w: Tensors, p: Mapping[str, Value],
                 arch: BertArch, bucket: Bucket) -> OpFn:
    return build(w, p, arch, bucket, linear)


def residual_layer_norm(
    lin: Linear, weights: Tensors, eps: float, residual: str, dtype: torch.dtype,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """LayerNorm(x·Wᵀ + b + r); ``lin`` must carry the ``add`` epilogue when ``residual`` is
    ``epilogue`` (the add then runs in the GEMM's post-op or in place on its output)."""
    n = lin.out_features
    ln_w, ln_b = weights["ln_weight"].to(dtype), weights["ln_bias"].to(dtype)

    def run(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        y = lin(x, r) if residual == "epilogue" else lin(x) + r
        return F.layer_norm(y, (n,), ln_w, ln_b, eps)

    return run
