"""attn_out: LayerNorm(ctx·Wᵀ + b + residual), the attention output projection."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from autotune.models.bert import BertArch, Bucket
from autotune.ops import common, cuda
from autotune.ops.ffn_down import build_residual_ln, cuda_residual_ln, triton_residual_ln
from autotune.ops.registry import OpFn, OpSpec, Tensors, register_op, variant
from autotune.space import Value


def make_weights(arch: BertArch, gen: torch.Generator) -> Tensors:
    return {**common.dense(arch.hidden_size, arch.hidden_size, gen),
            **common.layer_norm(arch.hidden_size, gen)}


def make_inputs(arch: BertArch, bucket: Bucket, gen: torch.Generator) -> Tensors:
    return {"ctx": common.hidden(arch, bucket, gen), "residual": common.hidden(arch, bucket, gen)}


def reference(w: Tensors, inputs: Tensors, arch: BertArch) -> torch.Tensor:
    y = F.linear(inputs["ctx"], w["weight"], w["bias"]) + inputs["residual"]
    return F.layer_norm(y, (arch.hidden_size,), w["ln_weight"], w["ln_bias"], arch.layer_norm_eps)


register_op(OpSpec("attn_out", make_weights, make_inputs, reference))


def _build(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket,
           linear: common.LinearMaker) -> OpFn:
    return build_residual_ln(w, p, arch, bucket, linear, "ctx")


common.gemm_variants("attn_out", _build, static_input="ctx")


@variant("attn_out", "triton", cuda.DEVICE)
def _cuda_triton(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    return triton_residual_ln(w, p, arch, "ctx")


cuda.torch_variants("attn_out", lambda w, p, arch, bucket: cuda_residual_ln(w, p, arch, "ctx"))
