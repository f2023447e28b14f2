"""Run one operator with its own intra-op thread count."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

A = TypeVar("A")
R = TypeVar("R")


def with_threads(fn: Callable[[A], R], threads: int) -> Callable[[A], R]:
    """Wrap ``fn`` so that it runs on ``threads`` threads; 0 keeps torch's current setting."""
    if threads <= 0:
        return fn

    def run(arg: A) -> R:
        prev = torch.get_num_threads()
        if prev == threads:
            return fn(arg)
        torch.set_num_threads(threads)
        try:
            return fn(arg)
        finally:
            torch.set_num_threads(prev)

    return run
