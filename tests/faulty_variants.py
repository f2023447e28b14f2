"""Variants that fail in each way a real candidate can, for measurement and search tests.

Imported by the tests and preloaded into the measurement worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping

import torch

from autotune.models.bert import BertArch, Bucket
from autotune.ops import variant
from autotune.ops.registry import OpFn, Tensors
from autotune.space import Value


@variant("pooler", "test_raise")
def _raise(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    def run(inp: Tensors) -> torch.Tensor:
        raise RuntimeError("deliberate failure in test_raise")

    return run


@variant("pooler", "test_hang")
def _hang(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    def run(inp: Tensors) -> torch.Tensor:
        time.sleep(3600)
        raise AssertionError("unreachable")

    return run


@variant("pooler", "test_crash")
def _crash(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    def run(inp: Tensors) -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    return run


@variant("pooler", "test_nan")
def _nan(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    return lambda inp: torch.full((bucket.batch, arch.hidden_size), float("nan"))


@variant("pooler", "test_wrong")
def _wrong(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    """Finite but wrong: forgets the bias and the tanh."""
    return lambda inp: inp["hidden"][:, 0] @ w["weight"].t()


@variant("pooler", "test_sticky_cuda_error")
def _sticky(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    """What a kernel that writes out of bounds on a GPU raises: the context is lost after it."""
    def run(inp: Tensors) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    return run
