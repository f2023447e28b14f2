"""GEMM with a fused epilogue: y = act(x·Wᵀ + b) + residual, one Triton program per output tile.

The weight is stored once as (K, N) in the compute precision; products accumulate in float32.
Programs are ordered in groups of ``group_m`` row tiles so that neighbouring programs share
weight tiles in L2. ``head_split`` writes the fused QKV output straight into the
(3, batch, heads, seq, head_dim) layout attention reads, so no transpose pass follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from autotune.kernels.triton.common import DOT_PRECISION, upcast_dots

ACTIVATIONS = ("none", "gelu_erf", "gelu_tanh", "tanh")


@dataclass(frozen=True)
class GemmTiles:
    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    split_k: int = 1  # > 1: K split over that many programs per tile, summed by a second kernel


@triton.jit
def _tanh(x):  # type: ignore[no-untyped-def]
    # 2·sigmoid(2x) − 1 saturates cleanly where exp(2x) would overflow.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _epilogue_store(  # type: ignore[no-untyped-def]
    acc, rm, rn, M, N, b_ptr, r_ptr, y_ptr, stride_rm, stride_rn, SEQ, HEADS, HEAD_DIM,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    HEAD_SPLIT: tl.constexpr,
):
    """bias, activation, residual on the float32 tile, then the store (rows-major or heads)."""
    inside = (rm[:, None] < M) & (rn[None, :] < N)
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if ACT == "gelu_erf":
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    elif ACT == "gelu_tanh":
        acc = 0.5 * acc * (1.0 + _tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)))
    elif ACT == "tanh":
        acc = _tanh(acc)
    if HAS_RES:
        res = tl.load(r_ptr + rm[:, None] * stride_rm + rn[None, :] * stride_rn, mask=inside,
                      other=0.0)
        acc += res.to(tl.float32)
    rm64 = rm.to(tl.int64)
    rn64 = rn.to(tl.int64)
    if HEAD_SPLIT:
        # row = (b, s), column = (which of q/k/v, head, d)  ->  y[which, b, head, s, d]
        width = HEADS * HEAD_DIM
        col = (rn64 // width) * M * width + ((rn64 % width) // HEAD_DIM) * SEQ * HEAD_DIM \
            + rn64 % HEAD_DIM
        row = (rm64 // SEQ) * SEQ * width + (rm64 % SEQ) * HEAD_DIM
        offsets = row[:, None] + col[None, :]
    else:
        offsets = rm64[:, None] * N + rn64[None, :]
    tl.store(y_ptr + offsets, acc.to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,  # type: ignore[no-untyped-def]
          GROUP_M: tl.constexpr):
    """Row and column indices of program ``pid``'s output tile, in grouped order."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows
    return pid_m * BLOCK_M + tl.arange(0, BLOCK_M), pid_n * BLOCK_N + tl.arange(0, BLOCK_N)


@triton.jit
def _gemm_kernel(  # type: ignore[no-untyped-def]
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, part_ptr,
    M, N, K, K_PER_SPLIT,
    stride_xm, stride_xk, stride_wk, stride_wn, stride_rm, stride_rn,
    SEQ, HEADS, HEAD_DIM,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    HEAD_SPLIT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    rm, rn = _tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    # With SPLIT_K > 1, program (tile, s) sums K_PER_SPLIT of the K products: more programs
    # for the small-M GEMMs of short batches, whose output tiles alone are fewer than the SMs.
    k_start = tl.program_id(1) * K_PER_SPLIT
    k_end = min(k_start + K_PER_SPLIT, K)
    rk = tl.arange(0, BLOCK_K)
    # Rows and columns past the edge wrap around for the loads (always in bounds, no mask
    # on the hot loop but K's); the store masks them out.
    x_ptrs = x_ptr + (rm % M)[:, None] * stride_xm + (k_start + rk)[None, :] * stride_xk
    w_ptrs = w_ptr + (k_start + rk)[:, None] * stride_wk + (rn % N)[None, :] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        a = tl.load(x_ptrs, mask=rk[None, :] < k_end - k0, other=0.0)
        b = tl.load(w_ptrs, mask=rk[:, None] < k_end - k0, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if PRECISION == "default":
            acc = tl.dot(a, b, acc)
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    if SPLIT_K == 1:
        _epilogue_store(acc, rm, rn, M, N, b_ptr, r_ptr, y_ptr, stride_rm, stride_rn,
                        SEQ, HEADS, HEAD_DIM, HAS_BIAS, HAS_RES, ACT, HEAD_SPLIT)
    else:  # float32 partial sums, added up (in a fixed order) by _split_k_reduce_kernel
        part = part_ptr + tl.program_id(1).to(tl.int64) * M * N
        tl.store(part + rm.to(tl.int64)[:, None] * N + rn[None, :], acc,
                 mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _split_k_reduce_kernel(  # type: ignore[no-untyped-def]
    part_ptr, b_ptr, r_ptr, y_ptr, M, N, stride_rm, stride_rn, SEQ, HEADS, HEAD_DIM,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    HEAD_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    rm, rn = _tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, 1)
    inside = (rm[:, None] < M) & (rn[None, :] < N)
    offsets = rm.to(tl.int64)[:, None] * N + rn[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for s in range(SPLIT_K):
        acc += tl.load(part_ptr + s * M * N + offsets, mask=inside, other=0.0)
    _epilogue_store(acc, rm, rn, M, N, b_ptr, r_ptr, y_ptr, stride_rm, stride_rn,
                    SEQ, HEADS, HEAD_DIM, HAS_BIAS, HAS_RES, ACT, HEAD_SPLIT)


class TritonLinear:
    """``y = act(x·Wᵀ + b) [+ residual]`` for a fixed weight; ``x`` is (..., K).

    ``precision``: float32 (exact products), tfloat32 (float32 data, TF32 tensor cores),
    float16 or bfloat16 (data and weight in that type). Output is in the data type.
    With ``head_split=(heads, head_dim)`` the output is (N // (heads·head_dim), batch, heads,
    seq, head_dim) and ``x`` must be (batch, seq, K).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, precision: str,
                 tiles: GemmTiles, activation: str = "none",
                 head_split: tuple[int, int] | None = None) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r} (expected {ACTIVATIONS})")
        if precision not in DOT_PRECISION:
            raise ValueError(f"unknown precision {precision!r} (expected {list(DOT_PRECISION)})")
        self.dtype, self.dot_precision = DOT_PRECISION[precision]
        self.n, self.k = weight.shape
        if head_split is not None and self.n % (head_split[0] * head_split[1]):
            raise ValueError(f"{self.n} output features do not split into {head_split} heads")
        self.weight = weight.detach().to(self.dtype).t().contiguous()  # (K, N)
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.tiles, self.activation, self.head_split = tiles, activation, head_split

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.k:
            raise ValueError(f"input has {x.shape[-1]} features, the weight expects {self.k}")
        x2 = x.reshape(-1, self.k).to(self.dtype)
        m = x2.shape[0]
        if self.head_split is not None:
            if x.dim() != 3:
                raise ValueError("a head-split output needs a (batch, seq, features) input")
            heads, head_dim = self.head_split
            batch, seq = x.shape[0], x.shape[1]
            y = x2.new_empty(self.n // (heads * head_dim), batch, heads, seq, head_dim)
        else:
            heads, head_dim, seq = 1, 1, 1
            y = x2.new_empty(*x.shape[:-1], self.n)
        r2 = None if residual is None else residual.reshape(-1, self.n)
        if m == 0:
            return y
        t = self.tiles
        tiles = triton.cdiv(m, t.block_m) * triton.cdiv(self.n, t.block_n)
        # every split gets whole BLOCK_K steps; fewer splits when K has fewer steps
        steps = triton.cdiv(self.k, t.block_k)
        split = max(1, min(t.split_k, steps))
        k_per_split = triton.cdiv(steps, split) * t.block_k
        split = triton.cdiv(self.k, k_per_split)
        part = x2.new_empty((split, m, self.n), dtype=torch.float32) if split > 1 else y
        residual_strides = (r2.stride(0), r2.stride(1)) if r2 is not None else (0, 0)
        epilogue = dict(HAS_BIAS=self.bias is not None, HAS_RES=r2 is not None,
                        ACT=self.activation, HEAD_SPLIT=self.head_split is not None)
        bias = self.bias if self.bias is not None else x2
        res = r2 if r2 is not None else x2
        _gemm_kernel[(tiles, split)](
            x2, self.weight, bias, res, y, part,
            m, self.n, self.k, k_per_split,
            x2.stride(0), x2.stride(1), self.weight.stride(0), self.weight.stride(1),
            *residual_strides, seq, heads, head_dim,
            **epilogue, PRECISION=self.dot_precision, UPCAST=upcast_dots(self.dtype),
            BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k, GROUP_M=t.group_m,
            SPLIT_K=split, num_warps=t.num_warps, num_stages=t.num_stages,
        )
        if split > 1:
            _split_k_reduce_kernel[(tiles,)](
                part, bias, res, y, m, self.n, *residual_strides, seq, heads, head_dim,
                **epilogue, BLOCK_M=t.block_m, BLOCK_N=t.block_n, SPLIT_K=split,
                num_warps=t.num_warps,
            )
        return y
