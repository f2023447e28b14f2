"""One copy of each weight per layout. A tensor derived from weights (cast to another dtype,
transposed, packed for a GEMM library, quantized, concatenated) is made once per process and
shared by every bucket, layer copy and variant that asks for the same layout, for as long as
the weights it came from live. Without it every (op, layer, bucket) held its own copy: memory
grew with the number of tuned buckets."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_cache: dict[tuple[Hashable, ...], Any] = {}
_lock = threading.RLock()  # re-entrant: a finalizer may run while this thread holds it


def derived(sources: tuple[torch.Tensor, ...], layout: Hashable, make: Callable[[], T]) -> T:
    """``make()``, or what it returned before for the same ``sources`` (the very tensor
    objects, unmodified since) and ``layout``. An entry goes when any of its sources is freed,
    so a tensor id reused later never finds another tensor's copy."""
    key = (tuple(id(s) for s in sources), tuple(_version(s) for s in sources), layout)
    with _lock:
        if key in _cache:
            return _cache[key]
    value = make()
    with _lock:
        if key in _cache:  # made by another thread meanwhile: keep one
            return _cache[key]
        _cache[key] = value
    for s in sources:
        weakref.finalize(s, _forget, key)
    return value


def _version(t: torch.Tensor) -> int:
    """In-place changes bump a tensor's version; inference tensors cannot change in place."""
    return 0 if t.is_inference() else t._version


def _forget(key: tuple[Hashable, ...]) -> None:
    with _lock:
        _cache.pop(key, None)


def held_bytes() -> int:
    """Bytes of the distinct derived tensors held now (packed library formats not counted)."""
    with _lock:
        values = list(_cache.values())
    seen: dict[int, int] = {}
    for v in values:
        for t in v.values() if isinstance(v, dict) else (v,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_quantized:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())
