"""Operator kinds (WHAT is computed) and their registered variants."""

from __future__ import annotations

from autotune.ops.registry import (
    OpSpec,
    Variant,
    cast_inputs,
    get_variant,
    op_spec,
    register_op,
    rel_error,
    variant,
    variants,
)

__all__ = [
    "OpSpec",
    "Variant",
    "cast_inputs",
    "get_variant",
    "op_spec",
    "register_op",
    "rel_error",
    "variant",
    "variants",
]
