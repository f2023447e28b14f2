"""The seven operator kinds of a BERT-style encoder, each described in one place.

Everything the program knows about an op kind, apart from how it is computed (the float32
reference and the variants, in ``autotune.ops``), is its entry in ``KINDS``: how often a
forward pass runs it, which bucket covers a call, its GEMM's dimensions, its shapes and cost
at a bucket, and where its weights are in a BERT checkpoint. Search, runtime, report and
export read it from here. This module imports nothing heavy: the CLI and the runtime use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from autotune.models.bert import BertArch, Bucket

#: Bytes per element of weights and of activations at each precision. Dynamic int8 quantizes
#: activations inside the GEMM, so they cross the op boundary in float32.
ELEMENT_BYTES = {"float32": (4, 4), "bfloat16": (2, 2), "float16": (2, 2), "int8": (1, 4)}

Shapes = dict[str, list[int]]
#: (arch, bucket, weight bytes, activation bytes) -> (FLOPs, bytes) of one call
Cost = Callable[["BertArch", "Bucket", int, int], tuple[float, float]]


def _no_epilogue(rows: int, n: int) -> float:
    return 0.0


@dataclass(frozen=True)
class OpKind:
    name: str
    #: run once per encoder layer (else once per forward pass)
    per_layer: bool
    #: what decides which bucket covers a call: its token count (token-wise GEMMs), its batch
    #: (the pooler reads one token per sequence) or batch and sequence (embeddings, attention)
    covered_by: Literal["tokens", "batch", "shape"]
    #: (N, K) of the op's GEMM (output and input features), None for ops without one
    gemm: Callable[[BertArch], tuple[int, int]] | None = None
    #: a GEMM kind's element-wise FLOPs after the GEMM, of (rows, N); and whether it reads a
    #: residual as wide as its output
    epilogue: Callable[[int, int], float] = _no_epilogue
    residual: bool = False
    #: (FLOPs, bytes) of a kind without a GEMM
    cost: Cost | None = None
    #: the op's weight names (what its ``make_weights`` returns) -> their names in an HF BERT
    #: checkpoint, under ``encoder.layer.{n}.`` for per-layer kinds; other families' names
    #: are mapped to BERT's by their ``Family``
    weights: Mapping[str, str] = field(default_factory=dict)
    #: a ``Family`` flag the kind needs (the pooler exists only in families that have one)
    needs: str | None = None

    def present(self, arch: BertArch) -> bool:
        return self.needs is None or bool(getattr(arch.spec, self.needs))

    def count(self, arch: BertArch) -> int:
        """Calls per forward pass."""
        return arch.num_hidden_layers if self.per_layer else 1

    def checkpoint_prefixes(self, arch: BertArch) -> list[str]:
        """Where each call's weights are in a BERT checkpoint (one prefix per call)."""
        if self.per_layer:
            return [f"encoder.layer.{n}." for n in range(arch.num_hidden_layers)]
        return [""]

    def rows(self, batch: int, seq: int) -> int:
        """Rows (tokens) a (batch, seq) call processes: the pooler reads one per sequence."""
        return batch if self.covered_by == "batch" else batch * seq

    def covers(self, bucket: Bucket, batch: int, seq: int) -> bool:
        if self.covered_by == "tokens":
            return bucket.batch * bucket.seq >= batch * seq
        if self.covered_by == "batch":
            return bucket.batch >= batch
        return bucket.batch >= batch and bucket.seq >= seq

    def distance(self, bucket: Bucket, batch: int, seq: int) -> float:
        """How far a bucket is from a call, in log scale of the dimensions that cover it."""
        if self.covered_by == "tokens":
            return abs(math.log(bucket.batch * bucket.seq / (batch * seq)))
        by_batch = abs(math.log(bucket.batch / batch))
        return by_batch if self.covered_by == "batch" else by_batch + abs(
            math.log(bucket.seq / seq))

    def shapes(self, arch: BertArch, bucket: Bucket) -> Shapes:
        b, s, h = bucket.batch, bucket.seq, arch.hidden_size
        if self.gemm is not None:
            n, k = self.gemm(arch)
            m = self.rows(b, s)
            return {"rows": [m], "weight": [n, k],
                    "out": [b, n] if self.covered_by == "batch" else [b, s, n]}
        if self.name == "attention":
            return {"q": [b, arch.num_attention_heads, s, arch.head_dim], "out": [b, s, h]}
        return {"input_ids": [b, s], "out": [b, s, h]}

    def flops_bytes(self, arch: BertArch, bucket: Bucket, precision: str = "float32",
                    ) -> tuple[float, float]:
        """(FLOPs, bytes) of one call: multiply-adds count 2, element-wise work (bias, GELU,
        residual, LayerNorm, softmax) a few FLOPs per element; bytes are the least traffic —
        weights, inputs and outputs each moved once. An estimate for the roofline."""
        w, a = ELEMENT_BYTES.get(precision, (4, 4))
        if self.gemm is None:
            assert self.cost is not None
            flops, nbytes = self.cost(arch, bucket, w, a)
            return float(flops), float(nbytes)
        n, k = self.gemm(arch)
        m = self.rows(bucket.batch, bucket.seq)
        return (2.0 * m * n * k + self.epilogue(m, n),
                float(w * n * k + a * (m * k + m * n + (m * n if self.residual else 0))))


def _ln(t: int, h: int) -> float:
    return 8.0 * t * h  # mean, variance, normalise, scale, shift


def _embeddings_cost(arch: BertArch, bucket: Bucket, w: int, a: int) -> tuple[float, float]:
    t, h = bucket.batch * bucket.seq, arch.hidden_size
    return 3.0 * t * h + _ln(t, h), a * 4.0 * t * h  # three gathered rows in, one out


def _attention_cost(arch: BertArch, bucket: Bucket, w: int, a: int) -> tuple[float, float]:
    s, t, h = bucket.seq, bucket.batch * bucket.seq, arch.hidden_size
    return (bucket.batch * arch.num_attention_heads * (4.0 * s * s * arch.head_dim + 5.0 * s * s),
            a * 4.0 * t * h + 4.0 * t)  # q, k, v in, context out; the mask


def _dense(prefix: str) -> dict[str, str]:
    return {"weight": f"{prefix}.weight", "bias": f"{prefix}.bias"}


def _dense_ln(dense: str, ln: str) -> dict[str, str]:
    return {**_dense(dense), "ln_weight": f"{ln}.weight", "ln_bias": f"{ln}.bias"}


def _hidden(a: BertArch) -> tuple[int, int]:
    return a.hidden_size, a.hidden_size


KINDS: dict[str, OpKind] = {k.name: k for k in (
    OpKind("embeddings", per_layer=False, covered_by="shape", cost=_embeddings_cost, weights={
        "word": "embeddings.word_embeddings.weight",
        "position": "embeddings.position_embeddings.weight",
        "token_type": "embeddings.token_type_embeddings.weight",
        "ln_weight": "embeddings.LayerNorm.weight", "ln_bias": "embeddings.LayerNorm.bias"}),
    OpKind("qkv_proj", per_layer=True, covered_by="tokens",
           gemm=lambda a: (3 * a.hidden_size, a.hidden_size),
           epilogue=lambda m, n: m * n,  # bias
           weights={f"{s}_{t}": f"attention.self.{full}.{t}"
                    for s, full in (("q", "query"), ("k", "key"), ("v", "value"))
                    for t in ("weight", "bias")}),
    OpKind("attention", per_layer=True, covered_by="shape", cost=_attention_cost),
    OpKind("attn_out", per_layer=True, covered_by="tokens", gemm=_hidden,
           epilogue=lambda m, n: 2.0 * m * n + _ln(m, n), residual=True,  # bias, add, LN
           weights=_dense_ln("attention.output.dense", "attention.output.LayerNorm")),
    OpKind("ffn_up", per_layer=True, covered_by="tokens",
           gemm=lambda a: (a.intermediate_size, a.hidden_size),
           epilogue=lambda m, n: 9.0 * m * n,  # bias + GELU
           weights=_dense("intermediate.dense")),
    OpKind("ffn_down", per_layer=True, covered_by="tokens",
           gemm=lambda a: (a.hidden_size, a.intermediate_size),
           epilogue=lambda m, n: 2.0 * m * n + _ln(m, n), residual=True,
           weights=_dense_ln("output.dense", "output.LayerNorm")),
    OpKind("pooler", per_layer=False, covered_by="batch", gemm=_hidden,
           epilogue=lambda m, n: 2.0 * m * n,  # bias + tanh
           weights=_dense("pooler.dense"), needs="pooler"),
)}

#: The kinds in forward order.
OP_KINDS = tuple(KINDS)


def op_cost(kind: str, arch: BertArch, bucket: Bucket, precision: str = "float32",
            ) -> tuple[float, float]:
    return KINDS[kind].flops_bytes(arch, bucket, precision)
