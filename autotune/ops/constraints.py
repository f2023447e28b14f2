"""Named constraints that search-space files may list. Each returns True when allowed.

``context`` holds the operator instance (``rows``, ``batch``, ``seq``) and the machine
(``cores``, ``qengines``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.space import Value, constraint


@constraint("row_block_below_rows", "a row block must split the rows (else it equals no block)")
def _row_block_below_rows(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return int(p.get("row_block", 0)) < int(ctx["rows"])


@constraint("mkl_packed_float32_only", "MKL's packed GEMM exists for float32 only")
def _mkl_packed_float32_only(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return p.get("impl") != "mkl_packed" or p.get("precision") == "float32"


@constraint("qengine_available", "the quantized engine must be built into this torch")
def _qengine_available(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return "qengine" not in p or p["qengine"] in ctx["qengines"]


@constraint("threads_within_cores", "no more threads than cores")
def _threads_within_cores(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return int(p.get("threads", 1)) <= int(ctx["cores"])
