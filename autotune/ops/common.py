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
    """Activations shaped (batch, seq, width) with unit variance and a few outlier channels,
    the same ones in every draw of a width: a model's outlier dimensions are its own (they
    are what a calibrated int8 range has to hold), not a property of one batch."""
    width = width or arch.hidden_size
    x = randn((bucket.batch, bucket.seq, width), gen)
    n = max(1, width // OUTLIER_EVERY)
    channels = torch.randperm(width, generator=torch.Generator().manual_seed(width))[:n]
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


#: The calibrated range of a GEMM's input, per input channel, kept beside its weights (an op
#: kind's ``Tensors``) for the variants that quantize with it: measured on calibration data,
#: shipped in the tuned config.
RANGE_KEYS = ("x_min", "x_max")

#: kind -> the name of its GEMM's input, for the kinds with a static int8 variant
CALIBRATED_INPUTS: dict[str, str] = {}


def calibrated_inputs() -> dict[str, str]:
    """kind -> the name of its GEMM's input, for the kinds with a static int8 variant."""
    from autotune.ops.registry import _load_builtin

    _load_builtin()
    return dict(CALIBRATED_INPUTS)


def input_range(x: torch.Tensor) -> Tensors:
    """Smallest and largest value of each channel (last dimension) of ``x``."""
    flat = x.detach().float().reshape(-1, x.shape[-1])
    return {"x_min": flat.amin(dim=0), "x_max": flat.amax(dim=0)}


def merge_ranges(a: Tensors, b: Tensors) -> Tensors:
    """The range covering both."""
    return {"x_min": torch.minimum(a["x_min"], b["x_min"]),
            "x_max": torch.maximum(a["x_max"], b["x_max"])}


def ranges_of(weights: Tensors) -> Tensors:
    """The calibrated input range kept among ``weights`` (empty if there is none)."""
    return {k: weights[k] for k in RANGE_KEYS if k in weights}


def int8_static_linear(weights: Tensors, params: Mapping[str, Value], rows: int,
                       epilogue: str = "none", prefix: str = "") -> Linear:
    """The ``int8_static`` variants' linear layer: int8 weights per output channel,
    activations quantized to uint8 in the calibrated range of the op's input (``x_min``,
    ``x_max`` among the weights), SmoothQuant strength ``smooth_pct`` (percent), the
    ``outliers`` widest input channels kept in float32; the epilogue runs as the GEMM's
    post-op."""
    if not all(k in weights for k in RANGE_KEYS):
        raise ValueError("int8_static needs the calibrated range of the op's input (x_min, "
                         "x_max), measured on calibration data")
    return make_linear(
        weights[f"{prefix}weight"], weights[f"{prefix}bias"], precision="int8_static",
        rows=rows, epilogue=epilogue, fuse_epilogue=True, x_min=weights["x_min"],
        x_max=weights["x_max"], smooth=int(params["smooth_pct"]) / 100,
        outliers=int(params.get("outliers", 0)),
        row_block=int(params.get("row_block", 0)),
    )


LinearMaker = Callable[..., Linear]
GemmBuilder = Callable[[Tensors, Mapping[str, Value], BertArch, Bucket, LinearMaker], OpFn]


def gemm_variants(kind: str, build: GemmBuilder, static_input: str | None = None) -> None:
    """Register a GEMM kind's CPU variants, ``dense``, ``int8_dynamic``, ``int8_token`` and,
    where its input is calibrated (``static_input``: the input's name), ``int8_static``:
    ``build`` gets the variant's linear-layer maker, called as
    ``linear(weights, params, rows, epilogue, prefix)``."""
    makers: list[tuple[str, LinearMaker, Callable[[Mapping[str, Value]], str] | None]] = [
        ("dense", dense_linear, None), ("int8_dynamic", int8_linear, _int8),
        ("int8_token", int8_token_linear, _int8)]
    if static_input is not None:
        CALIBRATED_INPUTS[kind] = static_input
        makers.append(("int8_static", int8_static_linear, _int8))
    for name, linear, precision in makers:
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
