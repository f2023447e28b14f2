"""pooler: tanh([CLS]·Wᵀ + b)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from autotune.kernels.cpu import with_threads
from autotune.models.bert import BertArch, Bucket
from autotune.ops import common, cuda
from autotune.ops.registry import OpFn, OpSpec, Tensors, register_op, variant
from autotune.space import Value


def make_weights(arch: BertArch, gen: torch.Generator) -> Tensors:
    return common.dense(arch.hidden_size, arch.hidden_size, gen)


def make_inputs(arch: BertArch, bucket: Bucket, gen: torch.Generator) -> Tensors:
    return {"hidden": common.hidden(arch, bucket, gen)}


def reference(w: Tensors, inputs: Tensors, arch: BertArch) -> torch.Tensor:
    return torch.tanh(F.linear(inputs["hidden"][:, 0], w["weight"], w["bias"]))


register_op(OpSpec("pooler", make_weights, make_inputs, reference))


def _build(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket,
           linear: common.LinearMaker) -> OpFn:
    lin = linear(w, p, bucket.batch, "tanh")
    return with_threads(lambda inp: lin(inp["hidden"][:, 0]), int(p["threads"]))


common.gemm_variants("pooler", _build)


# -- CUDA --------------------------------------------------------------------------------------

def _cuda_torch(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    t = cuda.cast(w, p)
    return lambda inp: torch.tanh(F.linear(inp["hidden"][:, 0], t["weight"], t["bias"]))


@variant("pooler", "triton", cuda.DEVICE)
def _cuda_triton(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    lin = cuda.triton_linear(w, p, "tanh")
    return lambda inp: lin(inp["hidden"][:, 0])


cuda.torch_variants("pooler", _cuda_torch)
