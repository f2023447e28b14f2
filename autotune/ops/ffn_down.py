"""ffn_down: LayerNorm(h·Wᵀ + b + residual), the output layer of each encoder block."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from autotune.kernels.cpu import with_threads
from autotune.models.bert import BertArch, Bucket
from autotune.ops import common, cuda
from autotune.ops.registry import OpFn, OpSpec, Tensors, precision_dtype, register_op, variant
from autotune.space import Value


def make_weights(arch: BertArch, gen: torch.Generator) -> Tensors:
    return {**common.dense(arch.hidden_size, arch.intermediate_size, gen),
            **common.layer_norm(arch.hidden_size, gen)}


def make_inputs(arch: BertArch, bucket: Bucket, gen: torch.Generator) -> Tensors:
    # GELU outputs are mostly small and non-negative; a shifted normal is close enough.
    h = F.gelu(common.hidden(arch, bucket, gen, arch.intermediate_size))
    return {"h": h, "residual": common.hidden(arch, bucket, gen)}


def reference(w: Tensors, inputs: Tensors, arch: BertArch) -> torch.Tensor:
    y = F.linear(inputs["h"], w["weight"], w["bias"]) + inputs["residual"]
    return F.layer_norm(y, (arch.hidden_size,), w["ln_weight"], w["ln_bias"], arch.layer_norm_eps)


register_op(OpSpec("ffn_down", make_weights, make_inputs, reference))


def build_residual_ln(
    w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket,
    linear: common.LinearMaker, x_name: str,
) -> OpFn:
    """Shared by ffn_down and attn_out: GEMM, residual add, LayerNorm."""
    residual = str(p["residual"])
    lin = linear(w, p, common.rows(bucket), "add" if residual == "epilogue" else "none")
    run = common.residual_layer_norm(lin, w, arch.layer_norm_eps, residual, precision_dtype(p))
    return with_threads(
        lambda inp: run(inp[x_name], inp["residual"]), int(p["threads"]))


def _build(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket,
           linear: common.LinearMaker) -> OpFn:
    return build_residual_ln(w, p, arch, bucket, linear, "h")


common.gemm_variants("ffn_down", _build, static_input="h")


# -- CUDA --------------------------------------------------------------------------------------

def cuda_residual_ln(w: Tensors, p: Mapping[str, Value], arch: BertArch,
                     x_name: str) -> OpFn:
    """Shared by ffn_down and attn_out on CUDA, torch path: GEMM, residual add, LayerNorm."""
    h, eps = arch.hidden_size, arch.layer_norm_eps
    t = cuda.cast(w, p)
    return lambda inp: F.layer_norm(F.linear(inp[x_name], t["weight"], t["bias"])
                                    + inp["residual"], (h,), t["ln_weight"], t["ln_bias"], eps)


def triton_residual_ln(w: Tensors, p: Mapping[str, Value], arch: BertArch, x_name: str) -> OpFn:
    """Shared by ffn_down and attn_out on CUDA, Triton: GEMM, residual add, LayerNorm."""
    lin, ln = cuda.triton_linear(w, p), cuda.triton_layer_norm(w, p, arch.layer_norm_eps)
    if p["residual"] == "epilogue":  # added in the GEMM's epilogue
        return lambda inp: ln(lin(inp[x_name], inp["residual"]))
    return lambda inp: ln(lin(inp[x_name]), inp["residual"])  # added inside the LayerNorm


@variant("ffn_down", "triton", cuda.DEVICE)
def _cuda_triton(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    return triton_residual_ln(w, p, arch, "h")


cuda.torch_variants("ffn_down", lambda w, p, arch, bucket: cuda_residual_ln(w, p, arch, "h"))
