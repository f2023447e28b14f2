"""LayerNorm over the last dimension, with an optional residual added first, in one pass.

Each program normalises ``block_rows`` rows held whole in registers (BERT's widths are at most a
few thousand); statistics are in float32 whatever the data type.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autotune.kernels.triton.common import block_for


@triton.jit
def _normalise(x, cols, N, w_ptr, b_ptr, eps):  # type: ignore[no-untyped-def]
    """LayerNorm of the float32 rows ``x`` (columns past ``N`` hold zeros)."""
    mean = tl.sum(x, axis=1) / N
    xc = tl.where(cols[None, :] < N, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / N + eps)
    w = tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
    return xc * rstd[:, None] * w[None, :] + b[None, :]


@triton.jit
def _layer_norm_kernel(  # type: ignore[no-untyped-def]
    x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, M, N, stride_x, stride_r, eps,
    HAS_RES: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_N)
    inside = (rows[:, None] < M) & (cols[None, :] < N)
    rows64 = rows.to(tl.int64)
    x = tl.load(x_ptr + rows64[:, None] * stride_x + cols[None, :], mask=inside, other=0.0)
    x = x.to(tl.float32)
    if HAS_RES:
        r = tl.load(r_ptr + rows64[:, None] * stride_r + cols[None, :], mask=inside, other=0.0)
        x += r.to(tl.float32)
    y = _normalise(x, cols, N, w_ptr, b_ptr, eps)
    tl.store(y_ptr + rows64[:, None] * N + cols[None, :], y.to(y_ptr.dtype.element_ty),
             mask=inside)


class TritonLayerNorm:
    """``LayerNorm(x [+ residual])`` with fixed weights; output in ``x``'s type."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                 block_rows: int = 1, num_warps: int = 4) -> None:
        self.weight = weight.detach().float().contiguous()
        self.bias = bias.detach().float().contiguous()
        self.n, self.eps = weight.shape[0], eps
        self.block_rows, self.num_warps = block_rows, num_warps

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.n:
            raise ValueError(f"input has {x.shape[-1]} features, LayerNorm expects {self.n}")
        x2 = _rows(x, self.n)
        r2 = None if residual is None else _rows(residual, self.n)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        m = x2.shape[0]
        if m == 0:
            return y
        grid = (triton.cdiv(m, self.block_rows),)
        _layer_norm_kernel[grid](
            x2, r2 if r2 is not None else x2, self.weight, self.bias, y, m, self.n,
            x2.stride(0), r2.stride(0) if r2 is not None else 0, self.eps,
            HAS_RES=r2 is not None, BLOCK_ROWS=self.block_rows, BLOCK_N=block_for(self.n),
            num_warps=self.num_warps,
        )
        return y


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t`` as (rows, n) with unit column stride (a view when it already is one)."""
    t2 = t.reshape(-1, n)
    return t2 if t2.stride(1) == 1 else t2.contiguous()
