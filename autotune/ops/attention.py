"""attention: softmax(Q·Kᵀ/√d + mask)·V with the padding mask, heads merged to (B, S, H)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from autotune.kernels.cpu import with_threads
from autotune.models.bert import BertArch, Bucket
from autotune.ops import common, cuda
from autotune.ops.registry import OpFn, OpSpec, Tensors, register_op, variant
from autotune.space import Value

SDPA_BACKENDS = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}


def make_weights(arch: BertArch, gen: torch.Generator) -> Tensors:
    return {}


def make_inputs(arch: BertArch, bucket: Bucket, gen: torch.Generator) -> Tensors:
    shape = (bucket.batch, arch.num_attention_heads, bucket.seq, arch.head_dim)
    keep = torch.arange(bucket.seq)[None, :] < common.lengths(bucket, gen)[:, None]
    keep = keep[:, None, None, :]  # (B, 1, 1, S): which keys are real tokens
    # HF's extended mask: 0 for real tokens, the dtype's minimum for padding.
    mask_add = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    q, k, v = (common.randn(shape, gen) for _ in range(3))
    return {"q": q, "k": k, "v": v, "mask_add": mask_add, "mask_bool": keep,
            "key_lengths": key_lengths(keep[:, 0, 0, :])}


def key_lengths(keep: torch.Tensor) -> torch.Tensor:
    """Per sequence of a (batch, seq) mask: keys up to its last real one (all if it has none),
    int32. Computed once per forward; variants that can skip trailing padding read it."""
    seq = keep.shape[-1]
    last = (torch.arange(1, seq + 1, device=keep.device) * keep.bool()).amax(dim=-1)
    return torch.where(last == 0, seq, last).to(torch.int32)


def merge_heads(ctx: torch.Tensor) -> torch.Tensor:
    b, h, s, d = ctx.shape
    return ctx.transpose(1, 2).reshape(b, s, h * d)


def reference(w: Tensors, inputs: Tensors, arch: BertArch) -> torch.Tensor:
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    scores = q @ k.transpose(-1, -2) / math.sqrt(arch.head_dim) + inputs["mask_add"]
    return merge_heads(scores.softmax(dim=-1) @ v)


register_op(OpSpec("attention", make_weights, make_inputs, reference))


@variant("attention", "eager")
def _eager(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    scale = 1.0 / math.sqrt(arch.head_dim)
    softmax_fp32 = bool(p["softmax_fp32"])
    scale_q = p["scale_on"] == "q"  # scaling Q (S×D) is cheaper than scaling scores (S×S)

    def run(inp: Tensors) -> torch.Tensor:
        q, k, v = inp["q"], inp["k"], inp["v"]
        if scale_q:
            scores = torch.matmul(q * scale, k.transpose(-1, -2)).add_(inp["mask_add"])
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).add_(inp["mask_add"])
        probs = scores.softmax(dim=-1, dtype=torch.float32 if softmax_fp32 else None)
        return merge_heads(torch.matmul(probs.to(v.dtype), v))

    return with_threads(run, int(p["threads"]))


@variant("attention", "sdpa")
def _sdpa(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    return with_threads(sdpa(p, SDPA_BACKENDS), int(p["threads"]))


#: Key lengths the blocked variant runs are rounded up to a multiple of this: oneDNN builds
#: and caches a GEMM kernel per shape (see ``autotune.runtime.KERNEL_CACHE_ENTRIES``), and one
#: per key length of production traffic would fill those caches with attention GEMMs alone.
KEY_STEP = 16


@variant("attention", "blocked")
def _blocked(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    """A few heads of one sequence at a time (``heads_per_block``, 0: all of its heads), so
    that the seq×seq scores stay in cache between the passes over them instead of streaming
    through memory for each (8×512 in bfloat16: 48 MB of scores per layer, and the whole-batch
    eager path spent ~60% of its time on scale, mask and softmax). The scale and the mask
    ride in the score GEMM (baddbmm). With ``skip_padded_keys`` each sequence attends over
    its keys up to its last real one only (rounded up to a multiple of ``KEY_STEP``): exact,
    the keys after it are masked."""
    scale = 1.0 / math.sqrt(arch.head_dim)
    block = int(p["heads_per_block"])
    softmax_dtype = torch.float32 if p["softmax_fp32"] else None
    skip = bool(p["skip_padded_keys"])

    def run(inp: Tensors) -> torch.Tensor:
        q, k, v = inp["q"], inp["k"], inp["v"]
        b, h, s, d = q.shape
        step = block or h
        mask = inp["mask_add"].to(q.dtype)  # (B, 1, 1, S): broadcast over heads and queries
        if not skip:
            lengths = [s] * b
        elif "key_lengths" in inp:
            lengths = inp["key_lengths"].tolist()
        else:
            lengths = key_lengths(inp["mask_bool"][:, 0, 0, :]).tolist()
        lengths = [min(s, -(-n // KEY_STEP) * KEY_STEP) for n in lengths]
        out = q.new_empty(b, s, h, d)
        for i, n in enumerate(lengths):
            m = mask[i, :, :, :n]
            for j in range(0, h, step):
                scores = torch.baddbmm(m, q[i, j:j + step], k[i, j:j + step, :n].transpose(1, 2),
                                       alpha=scale)
                probs = scores.softmax(dim=-1, dtype=softmax_dtype).to(v.dtype)
                out[i, :, j:j + step] = torch.bmm(probs, v[i, j:j + step, :n]).transpose(0, 1)
        return out.view(b, s, h * d)

    return with_threads(run, int(p["threads"]))


def sdpa(p: Mapping[str, Value], backends: Mapping[str, SDPBackend]) -> OpFn:
    """torch's SDPA restricted to the config's backend, with the config's mask form."""
    backend = backends[str(p["backend"])]
    mask_key = "mask_bool" if p["mask"] == "boolean" else "mask_add"

    def run(inp: Tensors) -> torch.Tensor:
        with sdpa_kernel([backend]):
            ctx = F.scaled_dot_product_attention(
                inp["q"], inp["k"], inp["v"], attn_mask=inp[mask_key])
        return merge_heads(ctx)

    return run


# -- CUDA --------------------------------------------------------------------------------------

CUDA_SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION,
                      "efficient": SDPBackend.EFFICIENT_ATTENTION,
                      "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


@variant("attention", "triton_flash", cuda.DEVICE)
def _cuda_flash(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    from autotune.kernels.triton import flash_attention

    bm, bn, warps, stages = (int(p[k]) for k in ("block_m", "block_n", "num_warps",
                                                  "num_stages"))
    skip = bool(p["skip_padded_keys"])
    return lambda inp: flash_attention(inp["q"], inp["k"], inp["v"], inp["mask_add"], bm, bn,
                                       warps, stages, inp["key_lengths"] if skip else None)


@variant("attention", "sdpa", cuda.DEVICE)
def _cuda_sdpa(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    return sdpa(p, CUDA_SDPA_BACKENDS)


@variant("attention", "eager", cuda.DEVICE)
def _cuda_eager(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    return _eager(w, {**p, "threads": 0}, arch, bucket)
