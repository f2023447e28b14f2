"""ffn_up: GELU(x·Wᵀ + b), the intermediate layer of each encoder block."""

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
    return common.dense(arch.intermediate_size, arch.hidden_size, gen)


def make_inputs(arch: BertArch, bucket: Bucket, gen: torch.Generator) -> Tensors:
    return {"x": common.hidden(arch, bucket, gen)}


def reference_gelu(arch: BertArch) -> str:
    return "tanh" if arch.hidden_act in ("gelu_new", "gelu_pytorch_tanh") else "none"


def reference(w: Tensors, inputs: Tensors, arch: BertArch) -> torch.Tensor:
    y = F.linear(inputs["x"], w["weight"], w["bias"])
    return F.gelu(y, approximate=reference_gelu(arch))


register_op(OpSpec("ffn_up", make_weights, make_inputs, reference))


def _build(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket,
           linear: common.LinearMaker) -> OpFn:
    epilogue = "gelu_tanh" if p["gelu"] == "tanh" else "gelu_erf"
    lin = linear(w, p, common.rows(bucket), epilogue)
    return with_threads(lambda inp: lin(inp["x"]), int(p["threads"]))


common.gemm_variants("ffn_up", _build, static_input="x")


# -- CUDA --------------------------------------------------------------------------------------

def _cuda_torch(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    t = cuda.cast(w, p)
    approximate = "tanh" if p["gelu"] == "tanh" else "none"
    return lambda inp: F.gelu(F.linear(inp["x"], t["weight"], t["bias"]),
                              approximate=approximate)


@variant("ffn_up", "triton", cuda.DEVICE)
def _cuda_triton(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    lin = cuda.triton_linear(w, p, "gelu_tanh" if p["gelu"] == "tanh" else "gelu_erf")
    return lambda inp: lin(inp["x"])


cuda.torch_variants("ffn_up", _cuda_torch)
