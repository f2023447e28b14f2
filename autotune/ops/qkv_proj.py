"""qkv_proj: the query, key and value projections, split into heads (B, heads, S, head_dim)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from autotune.kernels.cpu import with_threads
from autotune.kernels.derived import derived
from autotune.models.bert import BertArch, Bucket
from autotune.ops import common, cuda
from autotune.ops.registry import OpFn, OpSpec, Output, Tensors, register_op, variant
from autotune.space import Value

NAMES = ("q", "k", "v")


def make_weights(arch: BertArch, gen: torch.Generator) -> Tensors:
    w: Tensors = {}
    for n in NAMES:
        w.update(common.dense(arch.hidden_size, arch.hidden_size, gen, prefix=f"{n}_"))
    return w


def make_inputs(arch: BertArch, bucket: Bucket, gen: torch.Generator) -> Tensors:
    return {"x": common.hidden(arch, bucket, gen)}


def split_heads(y: torch.Tensor, arch: BertArch) -> torch.Tensor:
    b, s, _ = y.shape
    return y.view(b, s, arch.num_attention_heads, arch.head_dim).transpose(1, 2)


def reference(w: Tensors, inputs: Tensors, arch: BertArch) -> Output:
    x = inputs["x"]
    return tuple(split_heads(F.linear(x, w[f"{n}_weight"], w[f"{n}_bias"]), arch) for n in NAMES)


register_op(OpSpec("qkv_proj", make_weights, make_inputs, reference))


def _fused(w: Tensors) -> Tensors:
    """Q, K and V stacked into one GEMM's weights (one copy, shared by every bucket)."""
    parts = tuple(w[f"{n}_{kind}"] for kind in ("weight", "bias") for n in NAMES)
    return derived(parts, "qkv_fused", lambda: {
        "weight": torch.cat(parts[:3]), "bias": torch.cat(parts[3:])})


def _heads_of_fused(y: torch.Tensor, arch: BertArch) -> tuple[torch.Tensor, ...]:
    b, s, _ = y.shape  # (B, S, 3·hidden) -> three (B, H, S, D) views
    qkv = y.view(b, s, 3, arch.num_attention_heads, arch.head_dim).permute(2, 0, 3, 1, 4)
    return tuple(qkv.unbind(0))


def _build(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket,
           linear: common.LinearMaker) -> OpFn:
    rows = common.rows(bucket)
    contiguous = p["head_layout"] == "contiguous"

    def finish(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous() if contiguous else t

    if p["fused_qkv"]:
        lin = linear(_fused(w) | common.ranges_of(w), p, rows)

        def run(inp: Tensors) -> Output:  # one GEMM, heads split by a view
            return tuple(finish(t) for t in _heads_of_fused(lin(inp["x"]), arch))

    else:
        lins = [linear(w, p, rows, prefix=f"{n}_") for n in NAMES]

        def run(inp: Tensors) -> Output:
            x = inp["x"]
            return tuple(finish(split_heads(lin(x), arch)) for lin in lins)

    return with_threads(run, int(p["threads"]))


common.gemm_variants("qkv_proj", _build, static_input="x")


# -- CUDA --------------------------------------------------------------------------------------

def _cuda_torch(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    if p["fused_qkv"]:
        t = cuda.cast(_fused(w), p)
        return lambda inp: _heads_of_fused(F.linear(inp["x"], t["weight"], t["bias"]), arch)
    t = cuda.cast(w, p)
    return lambda inp: tuple(split_heads(F.linear(inp["x"], t[f"{n}_weight"], t[f"{n}_bias"]),
                                         arch) for n in NAMES)


@variant("qkv_proj", "triton", cuda.DEVICE)
def _cuda_triton(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    """One GEMM for Q, K and V; ``head_split`` has it write (3, B, H, S, D) directly."""
    if p["head_split"]:
        split = cuda.triton_linear(_fused(w), p, head_split=(arch.num_attention_heads,
                                                             arch.head_dim))
        return lambda inp: tuple(split(inp["x"]).unbind(0))
    lin = cuda.triton_linear(_fused(w), p)
    return lambda inp: _heads_of_fused(lin(inp["x"]), arch)


cuda.torch_variants("qkv_proj", _cuda_torch)
