"""Flash-style attention: softmax(Q·Kᵀ·scale + mask)·V without the S×S matrix.

One program per (query block, batch × head). Keys stream through in blocks with an online
softmax (running max and sum in float32); the additive padding mask is one value per (batch,
key), as BERT's extended mask is. Given each sequence's key count up to its last real key, a
program stops there: the keys after it are masked, so they add exactly nothing, and a padded batch
costs what its real tokens cost. The output is written with heads merged, (batch, seq,
heads·head_dim), which is what the attention output projection reads.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from autotune.kernels.triton.common import block_for, upcast_dots


@triton.jit
def _flash_kernel(  # type: ignore[no-untyped-def]
    q_ptr, k_ptr, v_ptr, mask_ptr, len_ptr, o_ptr,
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sm_b, sm_s,
    HEADS, SEQ, HEAD_DIM, scale,
    HAS_MASK: tl.constexpr, HAS_LENGTHS: tl.constexpr, UPCAST: tl.constexpr,
    EXACT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HEADS
    h = bh % HEADS
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    d_in = rd < HEAD_DIM
    q = tl.load(q_ptr + b * sq_b + h * sq_h + rm[:, None] * sq_s + rd[None, :],
                mask=(rm[:, None] < SEQ) & d_in[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    n_keys = SEQ
    if HAS_LENGTHS:
        n_keys = tl.load(len_ptr + b)
    for start in range(0, n_keys, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        key_in = rn < SEQ
        kt = tl.load(k_ptr + b * sk_b + h * sk_h + rn[None, :] * sk_s + rd[:, None],
                     mask=key_in[None, :] & d_in[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        # Scores in the natural-log domain, as the reference adds the mask: a fully masked
        # row then gets the same (uniform) weights as there.
        if EXACT:  # noqa: SIM108  (float32 data: IEEE products, not the TF32 default)
            s = tl.dot(q, kt, input_precision="ieee") * scale
        else:
            s = tl.dot(q, kt) * scale
        if HAS_MASK:
            s += tl.load(mask_ptr + b * sm_b + rn * sm_s, mask=key_in, other=0.0)[None, :]
        s = tl.where(key_in[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + rn[:, None] * sv_s + rd[None, :],
                    mask=key_in[:, None] & d_in[None, :], other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        if EXACT:
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    out = acc / l_i[:, None]
    width = HEADS * HEAD_DIM
    rows = (b * SEQ + rm).to(tl.int64)
    tl.store(o_ptr + rows[:, None] * width + h * HEAD_DIM + rd[None, :],
             out.to(o_ptr.dtype.element_ty), mask=(rm[:, None] < SEQ) & d_in[None, :])


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask_add: torch.Tensor | None, block_m: int = 64, block_n: int = 64,
                    num_warps: int = 4, num_stages: int = 2,
                    lengths: torch.Tensor | None = None) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) with unit stride on head_dim; ``mask_add``:
    additive, broadcastable from (batch, 1, 1, seq); ``lengths``: per sequence, the keys up to
    its last real one (``autotune.ops.attention.key_lengths``), to skip the key blocks after it.
    Returns (batch, seq, heads·head_dim)."""
    batch, heads, seq, head_dim = q.shape
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v shapes differ: {q.shape}, {k.shape}, {v.shape}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    mask = None
    if mask_add is not None:
        if mask_add.dim() != 4 or mask_add.shape[1] != 1 or mask_add.shape[2] != 1 \
                or mask_add.shape[3] != seq or mask_add.shape[0] not in (1, batch):
            raise ValueError(f"mask of shape {tuple(mask_add.shape)}: expected one additive "
                             f"value per key, (batch, 1, 1, {seq})")
        # A half-precision mask may hold -inf; the float32 minimum keeps a fully masked row
        # finite (uniform weights, as in the reference) instead of 0/0.
        mask = mask_add.float().clamp_min(torch.finfo(torch.float32).min)
        mask = mask.reshape(mask_add.shape[0], seq).expand(batch, seq)
    if lengths is not None and lengths.shape != (batch,):
        raise ValueError(f"key lengths of shape {tuple(lengths.shape)}: expected ({batch},)")
    out = torch.empty(batch, seq, heads * head_dim, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(seq, block_m), batch * heads)
    _flash_kernel[grid](
        q, k, v, mask if mask is not None else q,
        lengths.to(torch.int32) if lengths is not None else q, out,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        mask.stride(0) if mask is not None else 0, mask.stride(1) if mask is not None else 0,
        heads, seq, head_dim, 1.0 / math.sqrt(head_dim),
        HAS_MASK=mask is not None, HAS_LENGTHS=lengths is not None,
        UPCAST=upcast_dots(q.dtype), EXACT=q.dtype == torch.float32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_for(head_dim),
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
