"""Imports every operator-kind module so that each registers itself."""

from __future__ import annotations

from autotune.ops import (  # noqa: F401
    constraints,
    attention,
    attn_out,
    embeddings,
    ffn_down,
    ffn_up,
    pooler,
    qkv_proj,
)
