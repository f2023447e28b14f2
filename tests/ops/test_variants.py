"""Every registered CPU variant, over its whole space, matches the float32 reference."""

from __future__ import annotations

import os

import pytest
import torch

from autotune.models.bert import Bucket
from autotune.ops import cast_inputs, get_variant, op_spec, rel_error, variants
from autotune.ops.attention import key_lengths
from autotune.search.spaces import load_spaces, space_context
from autotune.settings import DEFAULT_SPACES_DIR
from tests.conftest import TINY, op_case

# bfloat16 keeps 8 mantissa bits; int8 ~7 bits on random data. The gate in the search is
# --max-rel-error; these bounds only catch variants that are broken, not merely imprecise.
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2, "int8_dynamic": 6e-2, "int8_token": 6e-2,
             "int8_static": 6e-2}
SPACES = load_spaces(DEFAULT_SPACES_DIR, "cpu")
BUCKETS = [Bucket(1, 8), Bucket(3, 17), Bucket(2, 40)]  # 51 and 80 rows: no multiple of a block


def _configs(kind: str, bucket: Bucket) -> list[dict]:
    ctx = space_context(kind, TINY, bucket)
    # threads only changes speed; one value keeps the test short.
    return [c for c in SPACES[kind].configs(ctx) if c.get("threads", 1) == 1]


def test_every_registered_variant_has_a_space_choice() -> None:
    for v in variants(device="cpu"):
        if v.name.startswith("test_"):  # failure-injection variants of tests/faulty_variants.py
            continue
        assert v.name in SPACES[v.kind].param("variant").choices, v


@pytest.mark.parametrize("bucket", BUCKETS, ids=lambda b: b.label)
@pytest.mark.parametrize("kind", sorted(SPACES))
def test_variants_match_reference(kind: str, bucket: Bucket) -> None:
    _check_variants(kind, built_for=bucket, run_at=bucket)


# The runtime runs a shape no bucket covers with the nearest bucket's choice, and a smaller
# shape with the smallest bucket that covers it: a variant built for one shape must be right
# at any other (row blocks with a remainder, fewer rows than packed for, other sequences).
@pytest.mark.parametrize(("built_for", "run_at"), [(Bucket(1, 8), Bucket(3, 17)),
                                                   (Bucket(2, 40), Bucket(3, 9))],
                         ids=["larger", "other"])
@pytest.mark.parametrize("kind", sorted(SPACES))
def test_variants_run_any_shape(kind: str, built_for: Bucket, run_at: Bucket) -> None:
    _check_variants(kind, built_for, run_at)


def _check_variants(kind: str, built_for: Bucket, run_at: Bucket) -> None:
    weights, inputs, ref = op_case(kind, TINY, run_at)
    configs = _configs(kind, built_for)
    if os.environ.get("AUTOTUNE_SKIP_COMPILE", "1") == "1":
        configs = [c for c in configs if c["variant"] != "compiled"]  # covered separately
    assert configs
    for params in configs:
        v = get_variant(kind, "cpu", str(params["variant"]))
        fn = v.build(weights, params, TINY, built_for)
        out = fn(cast_inputs(inputs, v.input_dtype(params)))
        precision = params["variant"] if str(params["variant"]).startswith("int8") \
            else params["precision"]
        err = rel_error(out, ref)
        bound = TOLERANCE[str(precision)]
        if params.get("gelu") == "tanh":  # an approximation of erf-GELU: ~1e-4 relative
            bound = max(bound, 1e-3)
        assert err <= bound, (params, err)


def test_compiled_embeddings_match_reference_at_every_shape() -> None:
    """Built for one bucket, called at more shapes than torch.compile's recompile limit (8),
    as shape-general dispatch calls it: no hard failure, the reference's result each time."""
    bucket = Bucket(2, 8)
    params = {"variant": "compiled", "precision": "float32", "threads": 1}
    weights, inputs, ref = op_case("embeddings", TINY, bucket, seed=1)
    fn = get_variant("embeddings", "cpu", "compiled").build(weights, params, TINY, bucket)
    assert rel_error(fn(inputs), ref) <= 1e-5
    for i, (b, s) in enumerate([(1, 5), (3, 7), (2, 16), (4, 9), (1, 33), (5, 3), (2, 40),
                                (6, 12), (1, 64), (3, 21)]):
        _, inputs, ref = op_case("embeddings", TINY, Bucket(b, s), seed=1)
        weights_i = op_case("embeddings", TINY, bucket, seed=1)[0]
        assert all(torch.equal(weights_i[k], weights[k]) for k in weights)
        assert rel_error(fn(inputs), ref) <= 1e-5, (i, b, s)


def test_the_search_leaves_compiled_embeddings_out_and_the_space_still_names_them() -> None:
    """~200 MB of inductor for ~10 µs a forward: never proposed, yet a config that holds it
    is still one of the space (it loads)."""
    space = SPACES["embeddings"]
    ctx = space_context("embeddings", TINY, Bucket(8, 128))
    assert {c["variant"] for c in space.configs(ctx)} == {"eager", "fused_tables"}
    assert "compiled" in space.param("variant").choices


def test_attention_honours_padding_mask() -> None:
    """Changing padded keys must not change any output (nor must skipping them)."""
    spec = op_spec("attention")
    bucket = Bucket(2, 12)
    gen = torch.Generator().manual_seed(2)
    inputs = spec.make_inputs(TINY, bucket, gen)
    inputs["mask_add"][1, ..., 6:] = torch.finfo(torch.float32).min
    inputs["mask_bool"][1, ..., 6:] = False
    inputs["key_lengths"] = key_lengths(inputs["mask_bool"][:, 0, 0, :])  # 6 for sequence 1
    for params in _configs("attention", bucket):
        v = get_variant("attention", "cpu", str(params["variant"]))
        fn = v.build({}, params, TINY, bucket)
        a = fn(cast_inputs(inputs, v.input_dtype(params)))
        changed = dict(inputs)
        changed["k"] = inputs["k"].clone()
        changed["v"] = inputs["v"].clone()
        changed["k"][1, :, 6:] += 5.0
        changed["v"][1, :, 6:] -= 3.0
        b = fn(cast_inputs(changed, v.input_dtype(params)))
        assert torch.allclose(a.float(), b.float(), atol=1e-6), params


def test_a_variant_says_what_precision_its_config_computes_in() -> None:
    """The registry, not a check of variant names, knows that int8_dynamic computes in int8."""
    from autotune.ops.registry import precision_of

    for kind in ("qkv_proj", "attn_out", "ffn_up", "ffn_down", "pooler"):
        assert precision_of(kind, "cpu", {"variant": "int8_dynamic", "qengine": "x86"}) == "int8"
        assert precision_of(kind, "cpu", {"variant": "dense", "precision": "bfloat16"}) \
            == "bfloat16"
    assert precision_of("attention", "cpu", {"variant": "sdpa"}) == "float32"
    assert precision_of("ffn_up", "cuda", {"variant": "compiled", "precision": "tfloat32"}) \
        == "tfloat32"


def test_a_call_larger_than_its_bucket_is_one_gemm_unless_row_blocks_were_chosen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Row blocks are a searched choice: a choice without them, called with more rows than
    its bucket (a 16x128 batch on an 8x128 choice), runs one GEMM, not one per bucket."""
    from autotune.kernels.cpu import gemm

    calls: list[int] = []
    linear = torch.nn.functional.linear

    def spy(x: torch.Tensor, *args: object) -> torch.Tensor:
        calls.append(x.shape[0])
        return linear(x, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(gemm.F, "linear", spy)
    w, b, x = torch.randn(6, 5), torch.randn(6), torch.randn(10, 5)
    for row_block, expected in ((0, [10]), (4, [4, 4, 2])):
        calls.clear()
        lin = gemm.make_linear(w, b, impl="aten", rows=8, row_block=row_block)
        torch.testing.assert_close(lin(x), linear(x, w, b))
        assert calls == expected


def test_blocked_attention_skips_padded_keys_exactly() -> None:
    """Sequences of 1, 17, 33 and 40 real tokens and one with none, padded to 40: attending
    only up to each sequence's last real key (16, 32, 40, 40, 40 keys once rounded to the
    kernel-cache step) gives what attending over all of them gives, per head block, and
    matches the float32 reference."""
    spec = op_spec("attention")
    bucket = Bucket(5, 40)
    inputs = spec.make_inputs(TINY, bucket, torch.Generator().manual_seed(3))
    real = torch.tensor([1, 17, 33, 40, 0])
    keep = (torch.arange(40)[None, :] < real[:, None])[:, None, None, :]
    inputs["mask_bool"] = keep
    inputs["mask_add"] = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    inputs["key_lengths"] = key_lengths(keep[:, 0, 0, :])
    assert inputs["key_lengths"].tolist() == [1, 17, 33, 40, 40]
    ref = spec.reference({}, inputs, TINY)
    v = get_variant("attention", "cpu", "blocked")
    for block in (0, 1, 2):
        outs = [v.build({}, {"precision": "float32", "heads_per_block": block,
                             "softmax_fp32": False, "skip_padded_keys": skip, "threads": 1},
                        TINY, bucket)(inputs) for skip in (False, True)]
        assert torch.allclose(outs[0], outs[1], atol=1e-6), block
        assert rel_error(outs[1], ref) <= 1e-5, block
