"""Linear layers on CPU: y = epilogue(x·Wᵀ + b), built once per weight, called many times.

The levers are real ones on x86: the GEMM library and weight layout (aten on (N,K) weights,
addmm on a transposed (K,N) copy, MKL-packed or oneDNN-packed blocked weights), the
precision (float32, bfloat16 — AMX where the CPU has it — or int8: activations quantized per
call, per tensor by a quantized engine or per token, or with a range calibrated beforehand),
where the epilogue runs (oneDNN post-op or a separate pass) and row blocking (M split into
chunks).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from autotune.kernels.derived import derived

IMPLS = ("aten", "aten_t", "mkl_packed", "onednn_packed")
EPILOGUES = ("none", "gelu_erf", "gelu_tanh", "tanh", "add")
QENGINES = ("x86", "fbgemm", "onednn")
# epilogue -> (oneDNN post-op attr, algorithm)
_ONEDNN_POST_OPS = {
    "gelu_erf": ("gelu", "none"),
    "gelu_tanh": ("gelu", "tanh"),
    "tanh": ("tanh", ""),
}


@dataclass(frozen=True)
class Linear:
    """A prepared linear layer: ``fn(x, other)`` where ``other`` is used by the ``add`` epilogue."""

    fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    out_features: int

    def __call__(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(x, other)


def _epilogue(y: torch.Tensor, epilogue: str, other: torch.Tensor | None) -> torch.Tensor:
    if epilogue == "gelu_erf":
        return F.gelu(y)
    if epilogue == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    if epilogue == "tanh":
        return torch.tanh(y)
    if epilogue == "add":
        assert other is not None
        return y.add_(other)  # y is a fresh GEMM output, so in place is safe
    return y


def _dense_2d(
    weight: torch.Tensor, bias: torch.Tensor | None, impl: str, dtype: torch.dtype,
    rows: int, epilogue: str, fuse_epilogue: bool,
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """A function of 2-D ``x`` (and 2-D ``other``) for one GEMM implementation."""
    w = _cast(weight, dtype)
    b = None if bias is None else _cast(bias, dtype)
    if impl == "aten":
        return lambda x, o: _epilogue(F.linear(x, w, b), epilogue, o)
    if impl == "aten_t":
        wt = derived((weight,), ("t", dtype), lambda: w.t().contiguous())  # (K, N)
        if b is None:
            return lambda x, o: _epilogue(x @ wt, epilogue, o)

        def addmm(x: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
            return _epilogue(torch.addmm(b, x, wt), epilogue, o)

        # Row blocks can be written straight into one output (no concatenation).
        addmm.into = lambda x, out: torch.addmm(b, x, wt, out=out)  # type: ignore[attr-defined]
        return addmm
    if impl == "mkl_packed":
        if dtype != torch.float32:
            raise ValueError("mkl_packed supports float32 only")
        packed = derived((weight,), ("mkl", rows),
                         lambda: torch.ops.mkl._mkl_reorder_linear_weight(w, rows))
        return lambda x, o: _epilogue(
            torch.ops.mkl._mkl_linear(x, packed, w, b, rows), epilogue, o)
    if impl == "onednn_packed":
        # One pack per weight and dtype, whatever the bucket: the rows hint changed neither
        # the outputs nor the speed at 32-4,096 rows (benchmarks/pack_hint_cpu.py checks a
        # machine), and a pack per bucket multiplied the weights' memory by the buckets.
        packed = derived((weight,), ("onednn", dtype),
                         lambda: torch.ops.mkldnn._reorder_linear_weight(w, rows))
        if fuse_epilogue and epilogue == "add":
            return lambda x, o: torch.ops.mkldnn._linear_pointwise.binary(x, o, packed, b, "add")
        if fuse_epilogue and epilogue in _ONEDNN_POST_OPS:
            attr, algorithm = _ONEDNN_POST_OPS[epilogue]
            return lambda x, o: torch.ops.mkldnn._linear_pointwise(
                x, packed, b, attr, [], algorithm)
        return lambda x, o: _epilogue(
            torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], ""), epilogue, o)
    raise ValueError(f"unknown GEMM impl {impl!r}")


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if t.dtype == dtype and t.is_contiguous():
        return t.detach()
    return derived((t,), ("cast", dtype), lambda: t.detach().to(dtype).contiguous())


def _quantize_weight(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Symmetric int8 weights, one scale per output row or per tensor."""
    w = w.detach().float()
    if per_channel:
        scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        return torch.quantize_per_channel(w, scales, zero, 0, torch.qint8)
    scale = max(float(w.abs().max()) / 127.0, 1e-12)
    return torch.quantize_per_tensor(w, scale, 0, torch.qint8)


def _int8_dynamic_2d(
    weight: torch.Tensor, bias: torch.Tensor | None, qengine: str, per_channel: bool,
    reduce_range: bool, epilogue: str,
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    if qengine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantized engine {qengine!r} is not available in this torch build")
    torch.backends.quantized.engine = qengine
    def prepack() -> Any:
        with warnings.catch_warnings():  # quantized tensor creation is deprecated but works
            warnings.simplefilter("ignore")
            return torch.ops.quantized.linear_prepack(
                _quantize_weight(weight, per_channel),
                None if bias is None else bias.detach().float(),
            )

    sources = (weight,) if bias is None else (weight, bias)
    packed = derived(sources, ("int8", qengine, per_channel), prepack)

    def run(x: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
        # The engine is process-wide state; another layer may have switched it.
        if torch.backends.quantized.engine != qengine:
            torch.backends.quantized.engine = qengine
        y = torch.ops.quantized.linear_dynamic(x.float(), packed, reduce_range)
        return _epilogue(y, epilogue, o)

    return run


def _int8_token_2d(
    weight: torch.Tensor, bias: torch.Tensor | None, epilogue: str,
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """int8 with one activation scale per token (row), computed at each call, and one weight
    scale per output channel; s8×s8→s32 through ``torch._int_mm``.

    Per-token scales need no calibration and keep what per-tensor scales lose on real
    weights: BERT's few tokens with outlier activations (CLS, SEP, punctuation) no longer set
    the scale of every other token in the batch. On all-MiniLM-L6-v2 with every encoder GEMM
    in int8 (110 texts, batches of 16), the worst sentence's embedding cosine is 0.992
    against 0.987 for ``int8_dynamic`` per tensor; per GEMM the error on real activations is
    0.008-0.025 against 0.010-0.054.
    """
    def prepare() -> dict[str, torch.Tensor]:
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        q = torch.round(w / scale[:, None]).to(torch.int8)
        b = torch.zeros(w.shape[0]) if bias is None else bias.detach().float()
        return {"weight_kn": q.t().contiguous(), "scale": scale, "bias": b}

    sources = (weight,) if bias is None else (weight, bias)
    packed = derived(sources, ("int8_token",), prepare)
    w_kn, w_scale, b = packed["weight_kn"], packed["scale"], packed["bias"]

    def run(x: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
        x = x.float()
        # Two reductions read x twice but write nothing: faster than x.abs().amax() (a
        # written copy) or aminmax (3x slower) at 1,024 x 3,072 on a Xeon.
        s = torch.maximum(x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True).neg_())
        s = s.clamp_min_(1e-12).div_(127.0)  # an all-zero row gets a scale, not a NaN
        q = torch.div(x, s).round_().to(torch.int8)  # |x / s| <= 127: no clamp needed
        # int32 into mul promotes in a slow loop (2.7x slower at 1,024 x 3,072): float first.
        y = torch._int_mm(q, w_kn).float().mul_(s)
        return _epilogue(torch.addcmul(b, y, w_scale, out=y), epilogue, o)

    return run


#: oneDNN's quantized linear takes these unary post-ops (name, algorithm)
_QLINEAR_POST_OPS = {"gelu_erf": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"),
                     "tanh": ("tanh", "")}


def _int8_static_2d(
    weight: torch.Tensor, bias: torch.Tensor | None, x_min: torch.Tensor, x_max: torch.Tensor,
    smooth: float, outliers: int, epilogue: str, fuse_epilogue: bool,
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """Static int8: the activation's range is calibrated beforehand (``x_min``, ``x_max``: the
    smallest and largest value of each input channel seen on calibration data), so a call
    quantizes in one pass with no reduction, to uint8 with a zero point: BERT's GEMM inputs
    are lopsided (GELU outputs lie in [-0.17, ∞)), and a symmetric int8 range wastes half its
    levels on them. Weights are int8 with one scale per output channel; the GEMM is oneDNN's
    u8×s8 (VNNI, AMX-INT8 where there is one), with GELU/tanh and the residual add as its
    post-ops when ``fuse_epilogue``.

    ``smooth`` > 0 migrates the outlier channels' range into the weights (SmoothQuant, Xiao
    et al. 2023): input channel j is divided by s_j = amax_j^smooth / wmax_j^(1 - smooth),
    weight column j multiplied by it. The division costs nothing: it is folded into the
    quantizing multiply, which is per channel anyway. On all-MiniLM-L6-v2 (every encoder
    GEMM static, 110 texts) the worst sentence's embedding cosine was 0.985 without it and
    0.994 at 0.75; per op the best value differs (0 for the attention output).

    ``outliers`` > 0 keeps that many input channels, those with the widest calibrated range
    (after smoothing), in float32 (LLM.int8()-style, Dettmers et al. 2022): their weight
    columns are zero in the int8 GEMM, the range is the other channels', and a small float32
    GEMM over the kept channels is added through the int8 GEMM's binary post-op. On
    all-MiniLM-L6-v2 with every encoder GEMM static, 4 such channels took the end-to-end
    error on held-out text from 0.103 to 0.047 (0.094 to 0.036 for ``ffn_down`` alone, whose
    GELU outputs hold the outliers).

    Values beyond the calibrated range are clipped: the range must come from data like
    production's.
    """
    k = weight.shape[1]
    if x_min.shape != (k,) or x_max.shape != (k,):
        raise ValueError(f"int8_static needs a calibrated range per input channel ({k}); "
                         f"got {tuple(x_min.shape)} and {tuple(x_max.shape)}")

    def prepare() -> dict[str, Any]:
        w = weight.detach().float()
        lo, hi = x_min.detach().float(), x_max.detach().float()
        s = torch.ones(k)
        if smooth > 0:
            amax = torch.maximum(hi, -lo).clamp_min(1e-5)
            s = (amax.pow(smooth) / w.abs().amax(dim=0).clamp_min(1e-5).pow(1 - smooth))
            s = s.clamp(1e-3, 1e3)
        kept = torch.topk(torch.maximum(hi, -lo) / s, outliers).indices.sort().values \
            if outliers > 0 else None
        w_float = None if kept is None else w[:, kept].t().contiguous()  # (outliers, N)
        w = w * s
        rest = torch.ones(k, dtype=torch.bool)
        if kept is not None:
            w[:, kept] = 0.0  # the int8 GEMM leaves them out: clipping them there is harmless
            rest[kept] = False
        w_scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        q = torch.round(w / w_scale[:, None]).clamp_(-127, 127).to(torch.int8)
        lo_t = min(float((lo / s)[rest].min()), 0.0)
        hi_t = max(float((hi / s)[rest].max()), 0.0)
        scale = max((hi_t - lo_t) / 255.0, 1e-12)
        return {"packed": torch.ops.onednn.qlinear_prepack(q, None), "w_scale": w_scale,
                "w_zero": torch.zeros(w.shape[0], dtype=torch.long),
                "bias": None if bias is None else bias.detach().float(),
                "inv_s": None if smooth <= 0 else 1.0 / s, "scale": scale,
                "zero": int(min(255, max(0, round(-lo_t / scale)))),
                "kept": kept, "w_float": w_float}

    if not 0 <= outliers < k:
        raise ValueError(f"int8_static keeps 0 to {k - 1} channels in float32, not {outliers}")
    sources = tuple(t for t in (weight, bias, x_min, x_max) if t is not None)
    p = derived(sources, ("int8_static", smooth, outliers), prepare)
    packed, w_scale, w_zero, b = p["packed"], p["w_scale"], p["w_zero"], p["bias"]
    inv_s, scale, zero, kept, w_float = (p["inv_s"], p["scale"], p["zero"], p["kept"],
                                         p["w_float"])
    unary, algorithm = _QLINEAR_POST_OPS.get(epilogue, ("none", "")) \
        if fuse_epilogue else ("none", "")
    with warnings.catch_warnings():  # quantized tensor creation is deprecated (warned once)
        warnings.simplefilter("ignore")
        torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)

    def quantize(x: torch.Tensor) -> torch.Tensor:
        # quantize_per_tensor rounds, clamps and narrows in one vectorized pass: 5x faster
        # than the same in three torch ops (1,024 x 384 on a Xeon); its bytes are uint8 as
        # they lie, so they are read in place, not copied by int_repr().
        x = x.float() if inv_s is None else x.float() * inv_s
        q = torch.quantize_per_tensor(x, scale, zero, torch.quint8)
        return torch.empty(0, dtype=torch.uint8, device=q.device).set_(
            q.untyped_storage(), q.storage_offset(), q.shape, q.stride())

    if kept is not None or (fuse_epilogue and epilogue == "add"):
        # The residual and the float32 channels' product come in through the binary post-op
        # (oneDNN takes no unary post-op after it: GELU and tanh then run as their own pass).
        def run_binary(x: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
            other = None if epilogue != "add" or o is None else o.float()
            if kept is not None:
                x_kept = x.index_select(1, kept).float()
                other = torch.mm(x_kept, w_float) if other is None else \
                    torch.addmm(other, x_kept, w_float)
            assert other is not None
            y = torch.ops.onednn.qlinear_pointwise.binary(
                quantize(x), scale, zero, packed, w_scale, w_zero, other.contiguous(), b,
                1.0, 0, torch.float32, 1.0, 0, "add", 1.0, "none", [], "")
            return y if epilogue == "add" else _epilogue(y, epilogue, None)
        return run_binary

    def run(x: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
        y = torch.ops.onednn.qlinear_pointwise(
            quantize(x), scale, zero, packed, w_scale, w_zero, b, 1.0, 0, torch.float32,
            unary, [], algorithm)
        return y if unary != "none" else _epilogue(y, epilogue, o)

    return run


def make_linear(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    precision: str = "float32",
    impl: str = "aten",
    rows: int = 128,
    row_block: int = 0,
    epilogue: str = "none",
    fuse_epilogue: bool = False,
    qengine: str = "x86",
    per_channel: bool = True,
    reduce_range: bool = False,
    x_min: torch.Tensor | None = None,
    x_max: torch.Tensor | None = None,
    smooth: float = 0.0,
    outliers: int = 0,
) -> Linear:
    """Prepare ``weight`` (N, K) and ``bias`` (N,) for calls on ``rows`` rows at a time.

    ``precision`` is ``float32``, ``bfloat16``, ``int8_dynamic`` (per-tensor activations, a
    quantized engine), ``int8_token`` (per-token activations) or ``int8_static`` (activations
    in the calibrated range ``x_min``..``x_max`` per input channel, ``smooth`` the
    SmoothQuant migration strength, ``outliers`` channels kept in float32); ``row_block`` > 0
    splits the rows into chunks of that many; ``fuse_epilogue`` runs the epilogue as a oneDNN
    post-op (``impl="onednn_packed"`` or ``int8_static`` only).
    """
    if epilogue not in EPILOGUES:
        raise ValueError(f"unknown epilogue {epilogue!r}")
    if fuse_epilogue and impl != "onednn_packed" and precision != "int8_static":
        raise ValueError("a fused epilogue needs impl=onednn_packed or int8_static")
    if 0 < row_block < rows:
        chunk = row_block
    elif impl == "mkl_packed" and precision == "float32":
        chunk = rows  # MKL's pack serves calls of exactly this many rows
    else:
        # No row blocks: a call with more rows than the bucket's runs as one GEMM (blocks of
        # the bucket's rows ran 10-15% slower at 8x128 on a 1x128 choice, plus a concat).
        chunk = 1 << 62
    into: Callable[[torch.Tensor, torch.Tensor], None] | None = None
    if precision == "int8_dynamic":
        core = _int8_dynamic_2d(weight, bias, qengine, per_channel, reduce_range, epilogue)
    elif precision == "int8_token":
        core = _int8_token_2d(weight, bias, epilogue)
    elif precision == "int8_static":
        if x_min is None or x_max is None:
            raise ValueError("int8_static needs the calibrated input range (x_min, x_max)")
        core = _int8_static_2d(weight, bias, x_min, x_max, smooth, outliers, epilogue,
                               fuse_epilogue)
    elif precision in ("float32", "bfloat16"):
        dtype = torch.float32 if precision == "float32" else torch.bfloat16
        core = _dense_2d(weight, bias, impl, dtype, min(chunk, rows), epilogue, fuse_epilogue)
        if impl == "aten_t" and bias is not None:
            into = core.into  # type: ignore[attr-defined]
    else:
        raise ValueError(f"unknown precision {precision!r}")
    n, k = weight.shape
    contiguous = impl in ("mkl_packed", "onednn_packed") or precision.startswith("int8")

    def run(x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 2 and chunk >= x.shape[0] and not contiguous:
            return core(x, other)  # the common small case: no reshapes, no Python loop
        lead = x.shape[:-1]
        x2 = x.reshape(-1, k)
        if contiguous:
            x2 = x2.contiguous()
        o2 = None if other is None else other.reshape(-1, n)
        m = x2.shape[0]
        if chunk >= m:
            y = core(x2, o2)
        elif into is not None:  # row blocks written in place: no concatenation pass
            y = x2.new_empty(m, n)
            for i in range(0, m, chunk):
                into(x2[i:i + chunk], y[i:i + chunk])
            y = _epilogue(y, epilogue, o2)
        else:
            y = torch.cat([
                core(x2[i:i + chunk], None if o2 is None else o2[i:i + chunk])
                for i in range(0, m, chunk)
            ])
        return y.reshape(*lead, n)

    return Linear(run, n)
