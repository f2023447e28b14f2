"""The CUDA variants and their search spaces, checked without a GPU.

Spaces and constraints are data about the device and the shapes; the variants run here on CPU
tensors (Triton in its interpreter), on a GPU where there is one.
"""

from __future__ import annotations

import pytest

from autotune.models.bert import BertArch, Bucket
from autotune.ops import cast_inputs, get_variant, rel_error, variants
from autotune.search.spaces import NO_DEVICE_LIMITS, load_spaces, space_context
from autotune.settings import DEFAULT_SPACES_DIR
from tests.conftest import KERNEL_DEVICE, TINY, op_case
from tests.space_sampling import covering_sample

SPACES = load_spaces(DEFAULT_SPACES_DIR, "cuda")
BASE = BertArch(30522, 768, 12, 12, 3072)
H100 = {"shared_memory": 232448, "compute_capability": 9.0}
T4 = {"shared_memory": 65536, "compute_capability": 7.5}
BOUND = {"float32": 1e-5, "tfloat32": 3e-3, "float16": 5e-3, "bfloat16": 3e-2}
#: vendor paths that exist on CUDA only; on a CPU machine they are not run here
CUDA_ONLY = {("attention", "backend", "efficient"), ("attention", "backend", "cudnn"),
             ("attention", "backend", "flash")}


def test_every_cuda_variant_has_a_space_choice() -> None:
    for v in variants(device="cuda"):
        assert v.name in SPACES[v.kind].param("variant").choices, v
    assert set(SPACES) == {"embeddings", "qkv_proj", "attention", "attn_out", "ffn_up",
                           "ffn_down", "pooler"}


def _sample(kind: str, bucket: Bucket, n: int, seed: int) -> list[dict]:
    """Random legal configs that cover every parameter value runnable here."""
    ctx = space_context(kind, TINY, bucket, "cuda")

    def runnable(c: dict) -> bool:
        return c["variant"] != "compiled" and not any((kind, k, v) in CUDA_ONLY
                                                      for k, v in c.items())

    return covering_sample(SPACES[kind], ctx, n, seed, runnable)


@pytest.mark.parametrize("bucket", [Bucket(1, 8), Bucket(3, 17)], ids=lambda b: b.label)
@pytest.mark.parametrize("kind", sorted(SPACES))
def test_cuda_variants_match_reference(kind: str, bucket: Bucket) -> None:
    dev_w, dev_in, ref = op_case(kind, TINY, bucket, device=KERNEL_DEVICE)
    for params in _sample(kind, bucket, 6, seed=len(kind) + bucket.seq):
        v = get_variant(kind, "cuda", str(params["variant"]))
        out = v.build(dev_w, params, TINY, bucket)(cast_inputs(dev_in, v.input_dtype(params)))
        bound = BOUND[str(params["precision"])]
        if params.get("gelu") == "tanh":  # an approximation of erf-GELU: ~1e-4 relative
            bound = max(bound, 1e-3)
        assert rel_error(out, ref) <= bound, params


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_cuda_variants_run_shapes_beyond_their_bucket(kind: str) -> None:
    """The runtime runs a shape no bucket covers with the nearest bucket's choice: Triton
    kernels built for 8 rows mask their tiles at 51."""
    built_for, run_at = Bucket(1, 8), Bucket(3, 17)
    dev_w, dev_in, ref = op_case(kind, TINY, run_at, device=KERNEL_DEVICE)
    for params in _sample(kind, built_for, 3, seed=len(kind)):
        v = get_variant(kind, "cuda", str(params["variant"]))
        out = v.build(dev_w, params, TINY, built_for)(cast_inputs(dev_in, v.input_dtype(params)))
        bound = BOUND[str(params["precision"])]
        if params.get("gelu") == "tanh":
            bound = max(bound, 1e-3)
        assert rel_error(out, ref) <= bound, params


def test_compiled_variant_matches_reference() -> None:
    """torch.compile of one op, here on whatever device the kernels run on."""
    bucket = Bucket(2, 8)
    weights, inputs, ref = op_case("ffn_up", TINY, bucket, seed=1, device=KERNEL_DEVICE)
    params = {"variant": "compiled", "precision": "float32", "gelu": "erf",
              "compile_mode": "default"}
    fn = get_variant("ffn_up", "cuda", "compiled").build(weights, params, TINY, bucket)
    assert rel_error(fn(inputs), ref) <= 1e-5


def _gemm(**over: object) -> dict:
    return {"variant": "triton", "precision": "bfloat16", "block_m": 64, "block_n": 64,
            "block_k": 64, "group_m": 8, "num_warps": 4, "num_stages": 3, "gelu": "erf"} | over


def _ctx(kind: str, bucket: Bucket, device: dict) -> dict:
    return {**space_context(kind, BASE, bucket, "cuda"), **device}


def test_gemm_constraints_prune_what_cannot_fit_and_keep_the_rest() -> None:
    space = SPACES["ffn_up"]
    ctx = _ctx("ffn_up", Bucket(8, 128), H100)
    assert space.violated(_gemm(), ctx) is None
    # 5 stages of 128×128 + 128×256 bfloat16 tiles = 480 KiB: beyond 227 KiB of shared memory
    big = _gemm(block_m=128, block_n=256, block_k=128, num_stages=5, num_warps=8)
    assert space.violated(big, ctx) == "gemm_fits_shared_memory"
    # the same tiles in 2 stages fit H100 but not a T4's 64 KiB
    two = _gemm(block_m=128, block_n=128, block_k=64, num_stages=2, num_warps=8)
    assert space.violated(two, ctx) is None
    assert space.violated(two, _ctx("ffn_up", Bucket(8, 128), T4)) is not None
    # a 128×256 float32 accumulator over 2 warps: 512 registers a thread
    regs = _gemm(block_m=128, block_n=256, block_k=32, num_stages=2, num_warps=2)
    assert space.violated(regs, ctx) == "gemm_fits_registers"
    assert space.violated({**regs, "num_warps": 8}, ctx) is None
    # one row (the pooler at batch 1): a 128-row block computes 127 rows of padding
    pooler = _ctx("pooler", Bucket(1, 128), H100)
    assert SPACES["pooler"].violated(_gemm(block_m=128, num_stages=2), pooler) \
        == "gemm_blocks_within_shape"
    assert SPACES["pooler"].violated(_gemm(block_m=16, num_stages=2), pooler) is None


def test_precision_and_backend_constraints() -> None:
    ctx = _ctx("ffn_up", Bucket(1, 128), T4)
    assert SPACES["ffn_up"].violated(_gemm(num_stages=2), ctx) == "bfloat16_needs_sm80"
    assert SPACES["ffn_up"].violated(_gemm(precision="float16", num_stages=2), ctx) is None
    att = _ctx("attention", Bucket(8, 128), H100)
    sdpa = {"variant": "sdpa", "precision": "float16", "mask": "additive"}
    assert SPACES["attention"].violated({**sdpa, "backend": "flash"}, att) \
        == "sdpa_flash_takes_no_mask"
    assert SPACES["attention"].violated({**sdpa, "backend": "efficient"}, att) is None


def test_attention_constraints() -> None:
    space = SPACES["attention"]
    flash = {"variant": "triton_flash", "precision": "float16", "block_m": 64, "block_n": 64,
             "num_warps": 4, "num_stages": 2}
    assert space.violated(flash, _ctx("attention", Bucket(8, 128), H100)) is None
    short = _ctx("attention", Bucket(8, 20), H100)  # 20 tokens: blocks of 32 at most
    assert space.violated(flash, short) == "attention_blocks_within_seq"
    assert space.violated({**flash, "block_m": 32, "block_n": 32}, short) is None
    wide = {**flash, "block_m": 128, "block_n": 128, "num_warps": 2, "num_stages": 1}
    assert space.violated(wide, _ctx("attention", Bucket(8, 128), H100)) \
        == "attention_fits_registers"
    deep = {**flash, "block_m": 128, "block_n": 128, "num_warps": 8, "num_stages": 4,
            "precision": "float32"}
    assert space.violated(deep, _ctx("attention", Bucket(8, 128), T4)) \
        == "attention_fits_shared_memory"


def test_every_cuda_space_keeps_legal_configs_for_bert_shapes() -> None:
    for device in (H100, T4, NO_DEVICE_LIMITS):
        for kind, space in SPACES.items():
            for bucket in (Bucket(1, 8), Bucket(1, 128), Bucket(32, 512)):
                ctx = {**space_context(kind, BASE, bucket, "cuda"), **device}
                legal = next((c for c in space.configs(ctx)
                              if str(c["variant"]).startswith("triton")), None)
                assert legal is not None, (kind, bucket, device)
                assert space.baseline is not None and space.violated(space.baseline, ctx) is None


def test_row_kernels_must_fit_registers() -> None:
    ctx = _ctx("ffn_down", Bucket(8, 128), H100)  # hidden 768: rows of 1024 values
    tri = {**_gemm(precision="float16", num_stages=2), "residual": "epilogue"}
    space = SPACES["ffn_down"]
    assert space.violated({**tri, "ln_rows": 8, "ln_warps": 1}, ctx) == "rows_fit_registers"
    assert space.violated({**tri, "ln_rows": 8, "ln_warps": 8}, ctx) is None
    emb = {"variant": "triton_fused", "precision": "float16", "block_rows": 16, "num_warps": 2}
    ectx = _ctx("embeddings", Bucket(8, 128), H100)
    assert SPACES["embeddings"].violated(emb, ectx) == "rows_fit_registers"
    assert SPACES["embeddings"].violated({**emb, "num_warps": 4}, ectx) is None


def test_split_k_constraint() -> None:
    ctx = _ctx("attn_out", Bucket(1, 128), H100)  # K = 768: 6 steps of 128
    tri = {**_gemm(precision="float16", block_k=128, num_stages=2), "residual": "epilogue",
           "ln_rows": 1, "ln_warps": 4}
    space = SPACES["attn_out"]
    assert space.violated({**tri, "split_k": 4}, ctx) is None
    assert space.violated({**tri, "split_k": 8}, ctx) == "split_k_within_k"
