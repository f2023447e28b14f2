"""embeddings: LayerNorm(word[ids] + position[pos] + token_type[types])."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from autotune.kernels.cpu import with_threads
from autotune.kernels.derived import derived
from autotune.models.bert import BertArch, Bucket
from autotune.ops import common, cuda
from autotune.ops.registry import (
    OpFn,
    OpSpec,
    Tensors,
    compile_any_shape,
    precision_dtype,
    register_op,
    variant,
)
from autotune.space import Value


def make_weights(arch: BertArch, gen: torch.Generator) -> Tensors:
    h = arch.hidden_size
    return {
        "word": common.randn((arch.vocab_size, h), gen, 0.02),
        "position": common.randn((arch.max_position_embeddings, h), gen, 0.02),
        "token_type": common.randn((arch.type_vocab_size, h), gen, 0.02),
        **common.layer_norm(h, gen),
    }


def make_inputs(arch: BertArch, bucket: Bucket, gen: torch.Generator) -> Tensors:
    b, s = bucket.batch, bucket.seq
    ids = torch.randint(0, arch.vocab_size, (b, s), generator=gen)
    # Sentence pairs: type 0 up to a random split point, type 1 after it.
    split = torch.randint(1, s + 1, (b, 1), generator=gen)
    types = (torch.arange(s)[None, :] >= split).long().clamp_max(arch.type_vocab_size - 1)
    return {"input_ids": ids, "token_type_ids": types}


def _positions(inputs: Tensors, table: torch.Tensor) -> torch.Tensor:
    """Position embeddings: of ``position_ids`` when given, else of 0..seq-1."""
    if "position_ids" in inputs:
        return F.embedding(inputs["position_ids"], table)
    return table[: inputs["input_ids"].shape[1]]


def reference(w: Tensors, inputs: Tensors, arch: BertArch) -> torch.Tensor:
    ids, types = inputs["input_ids"], inputs["token_type_ids"]
    x = F.embedding(ids, w["word"]) + F.embedding(types, w["token_type"])
    x = x + _positions(inputs, w["position"])
    return F.layer_norm(x, (arch.hidden_size,), w["ln_weight"], w["ln_bias"], arch.layer_norm_eps)


register_op(OpSpec("embeddings", make_weights, make_inputs, reference))


def _tables(w: Tensors, dtype: torch.dtype) -> Tensors:
    def cast(v: torch.Tensor) -> torch.Tensor:
        return derived((v,), ("cast", dtype), lambda: v.to(dtype).contiguous())

    return {k: cast(v) for k, v in w.items()}


@variant("embeddings", "eager")
def _eager(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    t = _tables(w, precision_dtype(p))
    h, eps = arch.hidden_size, arch.layer_norm_eps

    def run(inp: Tensors) -> torch.Tensor:
        ids, types = inp["input_ids"], inp["token_type_ids"]
        x = F.embedding(ids, t["word"]) + F.embedding(types, t["token_type"])
        x += _positions(inp, t["position"])
        return F.layer_norm(x, (h,), t["ln_weight"], t["ln_bias"], eps)

    return with_threads(run, int(p["threads"]))


@variant("embeddings", "fused_tables")
def _fused_tables(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    """Position and token-type tables pre-added into one (types × positions) table: one gather
    and one add fewer per token, then the word gather adds into it in place."""
    dtype = precision_dtype(p)
    t = _tables(w, dtype)
    h, eps, n_pos = arch.hidden_size, arch.layer_norm_eps, arch.max_position_embeddings
    pos_type = derived((w["token_type"], w["position"]), ("pos_type", dtype), lambda: (
        w["token_type"][:, None, :] + w["position"][None, :, :]).reshape(-1, h).to(dtype)
        .contiguous())

    def run(inp: Tensors) -> torch.Tensor:
        ids, types = inp["input_ids"], inp["token_type_ids"]
        pos = inp["position_ids"] if "position_ids" in inp else torch.arange(ids.shape[1])
        x = F.embedding(types * n_pos + pos, pos_type)
        x += F.embedding(ids, t["word"])
        return F.layer_norm(x, (h,), t["ln_weight"], t["ln_bias"], eps)

    return with_threads(run, int(p["threads"]))


@variant("embeddings", "compiled")
def _compiled(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    """torch.compile (inductor) of the eager gather+add+LayerNorm: one generated C++ loop."""
    eager = _eager(w, {**p, "threads": 0}, arch, bucket)
    compiled = compile_any_shape(eager)
    return with_threads(compiled, int(p["threads"]))


# -- CUDA --------------------------------------------------------------------------------------

@variant("embeddings", "triton_fused", cuda.DEVICE)
def _cuda_triton(w: Tensors, p: Mapping[str, Value], arch: BertArch, bucket: Bucket) -> OpFn:
    from autotune.kernels.triton import TritonEmbeddings

    emb = TritonEmbeddings(w["word"], w["position"], w["token_type"], w["ln_weight"],
                           w["ln_bias"], arch.layer_norm_eps, precision_dtype(p),
                           int(p["block_rows"]), int(p["num_warps"]))
    return lambda inp: emb(inp["input_ids"], inp["token_type_ids"], inp.get("position_ids"))


cuda.torch_variants("embeddings", lambda w, p, arch, bucket: _eager(
    w, {**p, "threads": 0}, arch, bucket), names=("eager", "compiled"))
