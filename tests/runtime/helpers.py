"""Hand-made tuned configs for runtime tests."""

from __future__ import annotations

from typing import Any

from autotune.models.bert import OP_KINDS, BertArch
from autotune.runtime.config import config_dict

F32_GEMM = {"variant": "dense", "precision": "float32", "impl": "onednn_packed",
            "fuse_epilogue": True, "threads": 1}
BF16_GEMM = {"variant": "dense", "precision": "bfloat16", "impl": "aten_t", "threads": 1}
INT8_GEMM = {"variant": "int8_dynamic", "qengine": "x86", "granularity": "per_channel",
             "reduce_range": False, "threads": 1}


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
