"""The registry of operator kinds and their variants, keyed by name.

An operator kind (``OpSpec``) says WHAT is computed: its weights, its inputs and a float32
reference that matches HF ``BertModel``. A variant says HOW: ``build(weights, params, arch,
bucket)`` prepares weights once (casting, packing, quantizing) and returns a function of the
inputs. Every variant's output is compared with the reference before it is timed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from autotune.models.bert import BertArch, Bucket
from autotune.space import Value

Tensors = dict[str, torch.Tensor]
Output = torch.Tensor | tuple[torch.Tensor, ...]
OpFn = Callable[[Tensors], Output]
Builder = Callable[[Tensors, Mapping[str, Value], BertArch, Bucket], OpFn]


@dataclass(frozen=True)
class OpSpec:
    kind: str
    make_weights: Callable[[BertArch, torch.Generator], Tensors]
    make_inputs: Callable[[BertArch, Bucket, torch.Generator], Tensors]
    reference: Callable[[Tensors, Tensors, BertArch], Output]


@dataclass(frozen=True)
class Variant:
    kind: str
    name: str
    device: str
    build: Builder
    #: dtype the variant takes its floating inputs in (activations stay in it between ops)
    input_dtype: Callable[[Mapping[str, Value]], torch.dtype]
    #: the precision a config of the variant computes in ("float32", "bfloat16", "int8", ...)
    precision: Callable[[Mapping[str, Value]], str]


_OPS: dict[str, OpSpec] = {}
_VARIANTS: dict[tuple[str, str, str], Variant] = {}


def register_op(spec: OpSpec) -> OpSpec:
    _OPS[spec.kind] = spec
    return spec


def variant(
    kind: str,
    name: str,
    device: str = "cpu",
    input_dtype: Callable[[Mapping[str, Value]], torch.dtype] | None = None,
    precision: Callable[[Mapping[str, Value]], str] | None = None,
) -> Callable[[Builder], Builder]:
    """Register ``build`` as variant ``name`` of ``kind`` on ``device``; by default its
    precision is its ``precision`` parameter (float32 without one), and its inputs come in
    that precision's dtype."""

    def deco(build: Builder) -> Builder:
        _VARIANTS[(kind, device, name)] = Variant(
            kind, name, device, build, input_dtype or precision_dtype,
            precision or named_precision)
        return build

    return deco


def compile_any_shape(fn: Callable[[Tensors], Any], mode: str = "default") -> Callable[..., Any]:
    """``torch.compile`` of an op for the shape it is first called at (the bucket's, as the
    search measured it); a call at another shape recompiles once with dynamic sizes instead of
    failing when the runtime sends more shapes than the recompile limit."""
    return torch.compile(fn, mode=mode, dynamic=None, fullgraph=True)


def named_precision(params: Mapping[str, Value]) -> str:
    return str(params.get("precision", "float32"))


#: Precisions from least to most precise: the model-level study steps ops back along it, and
#: a config's tier is its least precise GEMM's.
PRECISION_RANK = {"int8": 0, "bfloat16": 1, "float16": 2, "tfloat32": 3, "float32": 4}


def precision_of(kind: str, device: str, params: Mapping[str, Value]) -> str:
    """The precision a config (with its ``variant``) of ``kind`` on ``device`` computes in."""
    return get_variant(kind, device, str(params["variant"])).precision(params)


def layout_key(params: Mapping[str, Any]) -> tuple[str, ...]:
    """What decides the copy of a weight an op holds: variant, precision and GEMM layout
    (threads, row blocks and epilogues share one copy)."""
    return tuple(str(params.get(k)) for k in ("variant", "precision", "impl", "fused_qkv",
                                              "granularity", "qengine", "smooth_pct",
                                              "outliers"))


def precision_dtype(params: Mapping[str, Value]) -> torch.dtype:
    """Activations are in the variant's 16-bit type for bfloat16 and float16 variants, float32
    otherwise (int8 and TF32 included)."""
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        str(params.get("precision")), torch.float32)


def op_spec(kind: str) -> OpSpec:
    _load_builtin()
    try:
        return _OPS[kind]
    except KeyError:
        raise KeyError(f"unknown operator kind {kind!r}") from None


def get_variant(kind: str, device: str, name: str) -> Variant:
    """Look a variant up by name: the allowlist that exported configs are checked against."""
    _load_builtin()
    try:
        return _VARIANTS[(kind, device, name)]
    except KeyError:
        raise KeyError(f"unknown variant {name!r} for {kind} on {device}") from None


def variants(kind: str | None = None, device: str | None = None) -> list[Variant]:
    _load_builtin()
    return [v for (k, d, _), v in sorted(_VARIANTS.items())
            if (kind is None or k == kind) and (device is None or d == device)]


def _load_builtin() -> None:
    # Importing the op modules registers them; done lazily to keep import order simple.
    import autotune.ops.kinds  # noqa: F401


def cast_inputs(inputs: Tensors, dtype: torch.dtype) -> Tensors:
    """The floating inputs in ``dtype`` (the others as they are); nothing is copied, and no
    call is made, for inputs already in it."""
    if all(v.dtype == dtype or not v.is_floating_point() for v in inputs.values()):
        return inputs
    return {k: v.to(dtype) if v.is_floating_point() and v.dtype != dtype else v
            for k, v in inputs.items()}


def flatten(out: Output) -> torch.Tensor:
    parts = out if isinstance(out, tuple) else (out,)
    return torch.cat([p.float().reshape(-1) for p in parts])


def rel_error(out: Output, ref: Output) -> float:
    """‖out − ref‖ / ‖ref‖ over all outputs, in float64."""
    o, r = flatten(out).double(), flatten(ref).double()
    if o.shape != r.shape:
        raise ValueError(f"output has {o.numel()} elements, reference {r.numel()}")
    return float((o - r).norm() / r.norm().clamp_min(1e-30))
