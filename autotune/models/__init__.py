"""Model architectures, loading and the operator workload they imply."""

from __future__ import annotations

from autotune.models.bert import (
    KNOWN_ARCHITECTURES,
    BertArch,
    Bucket,
    OpInstance,
    ResolvedModel,
    resolve_model,
    workload,
)

__all__ = [
    "KNOWN_ARCHITECTURES",
    "BertArch",
    "Bucket",
    "OpInstance",
    "ResolvedModel",
    "resolve_model",
    "workload",
]
