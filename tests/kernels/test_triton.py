"""Every Triton kernel against its float32 reference, at shapes no block divides, on padded
batches. Without a GPU they run under TRITON_INTERPRET=1 (set by tests/conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autotune.kernels.triton import (
    ACTIVATIONS,
    DOT_PRECISION,
    GemmTiles,
    TritonEmbeddings,
    TritonLayerNorm,
    TritonLinear,
    flash_attention,
)
from autotune.ops.attention import key_lengths
from tests.conftest import KERNEL_DEVICE as DEV

# Bounds that catch a broken kernel, not an imprecise one (TF32 keeps 10 mantissa bits).
BOUND = {"float32": 1e-5, "tfloat32": 3e-3, "float16": 3e-3, "bfloat16": 2e-2}
DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SMALL = GemmTiles(block_m=16, block_n=32, block_k=32, group_m=1, num_warps=4, num_stages=2)
GROUPED = GemmTiles(block_m=32, block_n=32, block_k=16, group_m=4, num_warps=2, num_stages=3)


def err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double().cpu() - ref.double().cpu()).norm() / ref.double().cpu().norm())


def randn(*shape: int, std: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape) * std).to(DEV)


def act(y: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "gelu_erf":
        return F.gelu(y)
    if activation == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    return torch.tanh(y) if activation == "tanh" else y


@pytest.mark.parametrize("precision", list(DOT_PRECISION))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gemm_epilogues(precision: str, activation: str) -> None:
    torch.manual_seed(0)
    x, w, b = randn(3, 17, 40), randn(72, 40, std=0.2), randn(72, std=0.2)  # 51 rows
    for tiles in (SMALL, GROUPED):
        out = TritonLinear(w, b, precision, tiles, activation)(x)
        assert out.shape == (3, 17, 72)
        assert out.dtype == DOT_PRECISION[precision][0]
        assert err(out, act(F.linear(x, w, b), activation)) <= BOUND[precision]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_gemm_residual_epilogue_and_strided_input(precision: str) -> None:
    torch.manual_seed(1)
    dtype = DOT_PRECISION[precision][0]
    w, b = randn(24, 56, std=0.2), randn(24)
    rows = randn(5, 9, 56)[:, 0]  # (5, 56) with a row stride of 9·56: the pooler's [CLS] rows
    residual = randn(5, 24).to(dtype)
    out = TritonLinear(w, b, precision, GROUPED)(rows, residual)
    assert err(out, F.linear(rows, w, b) + residual.float()) <= BOUND[precision]
    one = TritonLinear(w, None, precision, SMALL)(rows[:1])  # one row, no bias
    assert err(one, F.linear(rows[:1], w)) <= BOUND[precision]


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_gemm_writes_heads_directly(precision: str) -> None:
    torch.manual_seed(2)
    batch, seq, heads, head_dim = 3, 13, 3, 8
    x, w, b = randn(batch, seq, 40), randn(3 * heads * head_dim, 40, std=0.2), randn(72)
    out = TritonLinear(w, b, precision, SMALL, head_split=(heads, head_dim))(x)
    ref = F.linear(x, w, b).view(batch, seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    assert out.shape == (3, batch, heads, seq, head_dim) and out.is_contiguous()
    assert err(out, ref) <= BOUND[precision]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("split_k", [2, 3, 64])
def test_gemm_split_k(precision: str, split_k: int) -> None:
    """K split over programs (3 does not divide its 7 steps of 16; 64 is more splits than
    steps), partial sums reduced with every epilogue, the head-split layout too."""
    torch.manual_seed(8)
    x, w, b, r = randn(3, 17, 100), randn(48, 100, std=0.2), randn(48), randn(3, 17, 48)
    tiles = GemmTiles(block_m=16, block_n=32, block_k=16, group_m=4, num_warps=4,
                      num_stages=2, split_k=split_k)
    for activation in ("gelu_erf", "tanh"):
        out = TritonLinear(w, b, precision, tiles, activation)(x)
        assert err(out, act(F.linear(x, w, b), activation)) <= BOUND[precision]
    dtype = DOT_PRECISION[precision][0]
    out = TritonLinear(w, b, precision, tiles)(x, r.to(dtype))
    assert err(out, F.linear(x, w, b) + r.to(dtype).float()) <= BOUND[precision]
    heads = TritonLinear(w, b, precision, tiles, head_split=(2, 8))(x)
    ref = F.linear(x, w, b).view(3, 17, 3, 2, 8).permute(2, 0, 3, 1, 4)
    assert err(heads, ref) <= BOUND[precision]


def test_gemm_rejects_bad_shapes() -> None:
    lin = TritonLinear(randn(8, 16), randn(8), "float32", SMALL)
    with pytest.raises(ValueError, match="features"):
        lin(randn(2, 15))
    with pytest.raises(ValueError, match="heads"):
        TritonLinear(randn(10, 16), None, "float32", SMALL, head_split=(2, 4))
    with pytest.raises(ValueError, match="precision"):
        TritonLinear(randn(8, 16), None, "int4", SMALL)


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("block_rows", [1, 4])
def test_layer_norm_with_and_without_residual(precision: str, block_rows: int) -> None:
    torch.manual_seed(3)
    n = 40
    w, b = 1 + randn(n, std=0.1), randn(n, std=0.1)
    x, r = randn(5, 7, n).to(DTYPE[precision]), randn(5, 7, n).to(DTYPE[precision])  # 35 rows
    ln = TritonLayerNorm(w, b, 1e-12, block_rows=block_rows, num_warps=2)
    for residual, total in ((None, x.float()), (r, x.float() + r.float())):
        out = ln(x, residual)
        assert out.dtype == x.dtype and out.shape == x.shape
        assert err(out, F.layer_norm(total, (n,), w, b, 1e-12)) <= BOUND[precision]


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    q, k, v, mask = (t.double() for t in (q, k, v, mask))
    b, h, s, d = q.shape
    probs = (q @ k.transpose(-1, -2) / math.sqrt(d) + mask).softmax(-1)
    return (probs @ v).transpose(1, 2).reshape(b, s, h * d)


def padding_mask(lengths: list[int], seq: int) -> torch.Tensor:
    keep = torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]
    mask = torch.zeros(len(lengths), 1, 1, seq)
    return mask.masked_fill(~keep[:, None, None, :], torch.finfo(torch.float32).min).to(DEV)


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("head_dim", [24, 32, 64])
def test_flash_attention_padded_batch(precision: str, head_dim: int) -> None:
    torch.manual_seed(4)
    batch, heads, seq = 3, 2, 37
    q, k, v = (randn(batch, heads, seq, head_dim) for _ in range(3))
    mask = padding_mask([37, 10, 1], seq)
    dtype = DTYPE[precision]
    lengths = key_lengths(mask[:, 0, 0, :] == 0)
    assert lengths.tolist() == [37, 10, 1]
    for blocks in ((16, 16), (32, 16), (16, 64)):
        for skip in (None, lengths):  # all key blocks, or up to each sequence's last real key
            out = flash_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, *blocks,
                                  num_warps=2, lengths=skip)
            assert out.shape == (batch, seq, heads * head_dim) and out.dtype == dtype
            assert err(out, attention_ref(q, k, v, mask)) <= BOUND[precision]


def test_flash_attention_masked_keys_never_matter() -> None:
    torch.manual_seed(5)
    q, k, v = (randn(2, 3, 20, 16) for _ in range(3))
    mask = padding_mask([20, 6], 20)
    out = flash_attention(q, k, v, mask, 16, 16)
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 6:], v2[1, :, 6:] = 1e4, -1e4  # padded keys of the second sequence
    assert torch.equal(out, flash_attention(q, k2, v2, mask, 16, 16))
    lengths = key_lengths(mask[:, 0, 0, :] == 0)
    assert torch.equal(flash_attention(q, k2, v2, mask, 16, 16, lengths=lengths),
                       flash_attention(q, k, v, mask, 16, 16, lengths=lengths))


def test_flash_attention_edge_masks_and_strided_heads() -> None:
    """A fully masked row weighs its keys uniformly, as the reference does, also with a
    half-precision mask holding -inf; q, k and v may be strided head views of one tensor."""
    torch.manual_seed(6)
    batch, heads, seq, d = 2, 2, 19, 16
    qkv = randn(batch, seq, 3, heads, d).permute(2, 0, 3, 1, 4)  # the fused projection's view
    q, k, v = qkv.unbind(0)
    mask = padding_mask([19, 0], seq)
    lengths = key_lengths(mask[:, 0, 0, :] == 0)
    assert lengths.tolist() == [19, 19]  # no real key: every key, as the reference weighs them
    for skip in (None, lengths):
        out = flash_attention(q, k, v, mask, 16, 16, lengths=skip)
        assert err(out, attention_ref(q, k, v, mask)) <= 1e-5
    half = padding_mask([19, 7], seq).half()  # -inf where the float32 minimum overflowed
    assert torch.isinf(half).any()
    out = flash_attention(q.half(), k.half(), v.half(), half, 16, 16)
    assert err(out, attention_ref(q, k, v, padding_mask([19, 7], seq))) <= BOUND["float16"]
    with pytest.raises(ValueError, match="one additive value per key"):
        flash_attention(q, k, v, torch.zeros(batch, 1, seq, seq, device=DEV))
    with pytest.raises(ValueError, match="key lengths"):
        flash_attention(q, k, v, mask, lengths=lengths[:1])


def test_key_lengths_stop_at_the_last_real_key() -> None:
    """Left padding or holes keep every key up to the last real one: skipping is exact."""
    keep = torch.tensor([[0, 0, 1, 1, 0], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert key_lengths(keep).tolist() == [4, 3, 5, 5]
    assert key_lengths(keep).dtype == torch.int32


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("block_rows", [1, 8])
def test_embeddings_fused(precision: str, block_rows: int) -> None:
    torch.manual_seed(7)
    vocab, positions, n = 50, 40, 40
    word, pos, types_t = randn(vocab, n), randn(positions, n), randn(2, n)
    lw, lb = 1 + randn(n, std=0.1), randn(n, std=0.1)
    ids = torch.randint(0, vocab, (3, 11)).to(DEV)
    types = torch.randint(0, 2, (3, 11)).to(DEV)
    emb = TritonEmbeddings(word, pos, types_t, lw, lb, 1e-12, DTYPE[precision], block_rows, 2)
    ref = F.layer_norm(word[ids] + pos[:11] + types_t[types], (n,), lw, lb, 1e-12)
    assert err(emb(ids, types), ref) <= BOUND[precision]
    pids = torch.randint(0, positions, (3, 11)).to(DEV)
    ref = F.layer_norm(word[ids] + pos[pids] + types_t[types], (n,), lw, lb, 1e-12)
    assert err(emb(ids, types, pids), ref) <= BOUND[precision]
    with pytest.raises(ValueError, match="position embeddings"):
        emb(torch.zeros(1, 41, dtype=torch.long, device=DEV), torch.zeros(1, 41,
            dtype=torch.long, device=DEV))
