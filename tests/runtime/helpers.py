"""Hand-made tuned configs for runtime tests."""

from __future__ import annotations

from typing import Any

from autotune.models.bert import BertArch
from autotune.models.kinds import OP_KINDS
from autotune.runtime.config import config_dict
from tests.conftest import TINY

F32_GEMM = {"variant": "dense", "precision": "float32", "impl": "onednn_packed",
            "fuse_epilogue": True, "threads": 1}
BF16_GEMM = {"variant": "dense", "precision": "bfloat16", "impl": "aten_t", "threads": 1}
INT8_GEMM = {"variant": "int8_dynamic", "qengine": "x86", "granularity": "per_channel",
             "reduce_range": False, "threads": 1}
INT8_TOKEN_GEMM = {"variant": "int8_token", "threads": 1}
STATIC_GEMM = {"variant": "int8_static", "smooth_pct": 50, "outliers": 0, "threads": 1}


def choices(gemm: dict[str, Any], precision: str) -> dict[str, dict[str, Any]]:
    """One config per kind, built on ``gemm`` for the GEMM kinds."""
    row = {"row_block": 0}
    return {
        "embeddings": {"variant": "fused_tables", "precision": precision, "threads": 1},
        "qkv_proj": {**gemm, "fused_qkv": True, "head_layout": "view", **row},
        "attention": {"variant": "sdpa", "precision": precision, "backend": "flash",
                      "mask": "boolean", "threads": 1},
        "attn_out": {**gemm, "residual": "epilogue", **row},
        "ffn_up": {**gemm, "gelu": "erf", **row},
        "ffn_down": {**gemm, "residual": "separate", "row_block": 0},
        "pooler": dict(gemm),
    }


def make_config(arch: BertArch, per_kind: dict[str, dict[str, Any]],
                buckets: list[tuple[int, int]], name: str = "test-bert",
                **layout: Any) -> dict[str, Any]:
    ops: dict[str, list[dict[str, Any]]] = {}
    for kind in OP_KINDS:
        params = dict(per_kind[kind])
        variant = params.pop("variant")
        ops[kind] = [{"bucket": {"batch": b, "seq": s}, "variant": variant, "params": params,
                      "latency_ms": 1.0, "baseline_ms": 2.0, "rel_error": 0.001}
                     for b, s in buckets]
    return config_dict(name, arch, "cpu", 0.02, ops, **layout)


def triton_config(graphs: int = 0, skip_padded_keys: bool = True) -> dict[str, Any]:
    """A cuda config of ``TINY`` (bucket 2×16) running a Triton kernel in every op it can."""
    entry = {"bucket": {"batch": 2, "seq": 16}, "latency_ms": 1.0, "baseline_ms": 1.0,
             "rel_error": 0.0}
    gemm = {"precision": "float16", "block_m": 32, "block_n": 32, "block_k": 32, "group_m": 4,
            "num_warps": 4, "num_stages": 2, "split_k": 1}
    ops = {
        "embeddings": [{**entry, "variant": "triton_fused",
                        "params": {"precision": "float16", "block_rows": 2, "num_warps": 2}}],
        "qkv_proj": [{**entry, "variant": "triton", "params": {**gemm, "head_split": True}}],
        "attention": [{**entry, "variant": "triton_flash", "params": {
            "precision": "float16", "block_m": 16, "block_n": 16, "num_warps": 2,
            "num_stages": 2, "skip_padded_keys": skip_padded_keys}}],
        "attn_out": [{**entry, "variant": "triton", "params": {
            **gemm, "residual": "epilogue", "ln_rows": 2, "ln_warps": 2}}],
        "ffn_up": [{**entry, "variant": "triton", "params": {**gemm, "gelu": "erf"}}],
        "ffn_down": [{**entry, "variant": "triton", "params": {  # K = 64: two splits of 32
            **gemm, "split_k": 2, "residual": "layer_norm", "ln_rows": 1, "ln_warps": 4}}],
        "pooler": [{**entry, "variant": "torch", "params": {"precision": "float16"}}],
    }
    return config_dict("tiny", TINY, "cuda", 0.05, ops, cuda_graphs=graphs)
