"""The Triton kernels and every CUDA variant on a GPU, at BERT-base shapes (``pytest -m gpu``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autotune.kernels.triton import GemmTiles, TritonLayerNorm, TritonLinear, flash_attention
from autotune.models.bert import BertArch, Bucket
from autotune.ops import cast_inputs, get_variant, rel_error
from autotune.ops.attention import key_lengths
from autotune.search.spaces import load_spaces, space_context
from autotune.settings import DEFAULT_SPACES_DIR
from tests.conftest import op_case
from tests.space_sampling import covering_sample

BASE = BertArch(30522, 768, 12, 12, 3072)
BOUND = {"float32": 1e-5, "tfloat32": 3e-3, "float16": 5e-3, "bfloat16": 3e-2}
TILES = GemmTiles(block_m=64, block_n=128, block_k=64, group_m=8, num_warps=4, num_stages=3)


def err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@pytest.mark.parametrize("precision", ["float32", "tfloat32", "float16", "bfloat16"])
@pytest.mark.parametrize("rows", [128, 1024, 4096 + 7])
def test_gemm_at_bert_shapes(precision: str, rows: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(rows, 768, device="cuda")
    w, b = torch.randn(3072, 768, device="cuda") * 0.02, torch.randn(3072, device="cuda") * 0.02
    out = TritonLinear(w, b, precision, TILES, "gelu_erf")(x)
    ref = F.gelu(F.linear(x, w, b))  # torch's float32 matmuls are exact (TF32 off) by default
    assert err(out, ref) <= BOUND[precision]
    w2 = torch.randn(768, 3072, device="cuda") * 0.02
    r = torch.randn(rows, 768, device="cuda")
    ref2 = F.linear(ref, w2, b[:768]) + r
    lin = TritonLinear(w2, b[:768], precision, TILES)
    down = lin(ref.to(lin.dtype), r.to(lin.dtype))
    assert err(down, ref2) <= BOUND[precision]


def test_qkv_head_split_and_flash_attention_at_bert_shapes() -> None:
    torch.manual_seed(1)
    batch, seq = 8, 128
    x = torch.randn(batch, seq, 768, device="cuda")
    w, b = torch.randn(2304, 768, device="cuda") * 0.02, torch.randn(2304, device="cuda") * 0.02
    q, k, v = TritonLinear(w, b, "float16", TILES, head_split=(12, 64))(x.half()).unbind(0)
    ref = F.linear(x, w, b).view(batch, seq, 3, 12, 64).permute(2, 0, 3, 1, 4)
    assert err(torch.stack([q, k, v]), ref) <= BOUND["float16"]
    lengths = torch.randint(1, seq + 1, (batch,))
    lengths[0] = seq
    keep = torch.arange(seq)[None, :] < lengths[:, None]
    mask = torch.zeros(batch, 1, 1, seq).masked_fill(~keep[:, None, None, :],
                                                     torch.finfo(torch.float32).min).cuda()
    rq, rk, rv = ref.double().unbind(0)
    probs = (rq @ rk.transpose(-1, -2) / math.sqrt(64) + mask.double()).softmax(-1)
    want = (probs @ rv).transpose(1, 2).reshape(batch, seq, 768)
    for blocks in ((64, 64), (128, 32), (32, 128)):
        for lengths in (None, key_lengths(keep.cuda())):
            out = flash_attention(q, k, v, mask, *blocks, num_warps=4, num_stages=2,
                                  lengths=lengths)
            assert err(out, want) <= BOUND["float16"]
    ln = TritonLayerNorm(torch.ones(768, device="cuda"), torch.zeros(768, device="cuda"), 1e-12,
                         block_rows=4, num_warps=4)
    assert err(ln(want.float(), x), F.layer_norm(want.float() + x, (768,))) <= 1e-5


@pytest.mark.parametrize("kind", ["embeddings", "qkv_proj", "attention", "attn_out", "ffn_up",
                                  "ffn_down", "pooler"])
def test_every_cuda_variant_at_bert_shapes(kind: str) -> None:
    """A sample of each space on the GPU, vendor paths (SDPA backends, torch.compile) too;
    a config the GPU cannot run must fail with an exception (a failed trial), never be wrong."""
    space = load_spaces(DEFAULT_SPACES_DIR, "cuda")[kind]
    bucket = Bucket(8, 128)
    weights, inputs, ref = op_case(kind, BASE, bucket, device="cuda")
    sample = covering_sample(space, space_context(kind, BASE, bucket, "cuda"), 8, seed=0)
    ran = 0
    for params in sample:
        v = get_variant(kind, "cuda", str(params["variant"]))
        try:
            out = v.build(weights, params, BASE, bucket)(cast_inputs(inputs, v.input_dtype(params)))
            torch.cuda.synchronize()
        except Exception:  # e.g. an SDPA backend this GPU lacks: the search records it
            continue
        ran += 1
        bound = max(BOUND[str(params["precision"])], 1e-3 if params.get("gelu") == "tanh" else 0)
        assert rel_error(out, ref) <= bound, params
    assert ran >= len(sample) // 2
