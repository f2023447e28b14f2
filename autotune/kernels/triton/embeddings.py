"""Embeddings in one kernel: gather word + position + token-type rows, add, LayerNorm."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autotune.kernels.triton.common import block_for
from autotune.kernels.triton.layernorm import _normalise


@triton.jit
def _embeddings_kernel(  # type: ignore[no-untyped-def]
    ids_ptr, types_ptr, pos_ptr, word_ptr, position_ptr, type_ptr, w_ptr, b_ptr, y_ptr,
    M, N, SEQ, eps,
    HAS_POS: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_N)
    live = rows < M
    inside = live[:, None] & (cols[None, :] < N)
    ids = tl.load(ids_ptr + rows, mask=live, other=0).to(tl.int64)
    types = tl.load(types_ptr + rows, mask=live, other=0).to(tl.int64)
    if HAS_POS:
        pos = tl.load(pos_ptr + rows, mask=live, other=0).to(tl.int64)
    else:
        pos = (rows % SEQ).to(tl.int64)
    x = tl.load(word_ptr + ids[:, None] * N + cols[None, :], mask=inside, other=0.0).to(tl.float32)
    x += tl.load(position_ptr + pos[:, None] * N + cols[None, :], mask=inside,
                 other=0.0).to(tl.float32)
    x += tl.load(type_ptr + types[:, None] * N + cols[None, :], mask=inside,
                 other=0.0).to(tl.float32)
    y = _normalise(x, cols, N, w_ptr, b_ptr, eps)
    tl.store(y_ptr + rows.to(tl.int64)[:, None] * N + cols[None, :],
             y.to(y_ptr.dtype.element_ty), mask=inside)


class TritonEmbeddings:
    """BERT embeddings for (batch, seq) token ids; tables kept in ``dtype``, output too."""

    def __init__(self, word: torch.Tensor, position: torch.Tensor, token_type: torch.Tensor,
                 ln_weight: torch.Tensor, ln_bias: torch.Tensor, eps: float, dtype: torch.dtype,
                 block_rows: int = 1, num_warps: int = 4) -> None:
        self.word, self.position, self.token_type = (
            t.detach().to(dtype).contiguous() for t in (word, position, token_type))
        self.ln_weight = ln_weight.detach().float().contiguous()
        self.ln_bias = ln_bias.detach().float().contiguous()
        self.n, self.eps, self.dtype = word.shape[1], eps, dtype
        self.block_rows, self.num_warps = block_rows, num_warps

    def __call__(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor:
        batch, seq = input_ids.shape
        if seq > self.position.shape[0]:
            raise ValueError(f"sequence of {seq} tokens is longer than the "
                             f"{self.position.shape[0]} position embeddings")
        ids = input_ids.contiguous()
        types = token_type_ids.expand(batch, seq).contiguous()
        pos = None if position_ids is None else position_ids.expand(batch, seq).contiguous()
        y = torch.empty(batch, seq, self.n, dtype=self.dtype, device=ids.device)
        m = batch * seq
        if m == 0:
            return y
        grid = (triton.cdiv(m, self.block_rows),)
        _embeddings_kernel[grid](
            ids, types, pos if pos is not None else ids, self.word, self.position,
            self.token_type, self.ln_weight, self.ln_bias, y, m, self.n, seq, self.eps,
            HAS_POS=pos is not None, BLOCK_ROWS=self.block_rows, BLOCK_N=block_for(self.n),
            num_warps=self.num_warps,
        )
        return y
