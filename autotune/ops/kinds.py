"""Imports every operator-kind module so that each registers itself."""

from __future__ import annotations

from autotune.ops import (  # noqa: F401
    attention,
    attn_out,
    constraints,
    embeddings,
    ffn_down,
    ffn_up,
    pooler,
    qkv_proj,
)
