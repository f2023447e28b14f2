"""BERT weights: read from a checkpoint (torch only), or made at random, and split per op."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from autotune.errors import UserError
from autotune.models.bert import BertArch

Tensors = dict[str, torch.Tensor]

_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}


def read_safetensors(path: Path) -> Tensors:
    """A safetensors file: 8-byte header size, a JSON header, then raw little-endian data."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out: Tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(meta["dtype"])
        if dtype is None:
            raise UserError(f"{path}: tensor {name} has unsupported dtype {meta['dtype']}")
        start, end = meta["data_offsets"]
        t = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start \
            else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(meta["shape"])
    return out


def read_checkpoint(folder: Path) -> Tensors | None:
    """The weights in ``folder`` (safetensors or a weights-only torch file), or None."""
    st = folder / "model.safetensors"
    if st.is_file():
        return read_safetensors(st)
    pt = folder / "pytorch_model.bin"
    if pt.is_file():
        return dict(torch.load(pt, map_location="cpu", weights_only=True))
    return None


def random_weights(arch: BertArch, seed: int = 0) -> Tensors:
    """HF-style initialisation (normal, std 0.02; LayerNorm 1 and 0), under HF BERT's names
    (whatever the family: ``split_weights`` reads them), with a pooler if the family has one."""
    gen = torch.Generator().manual_seed(seed)
    h, i = arch.hidden_size, arch.intermediate_size

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * 0.02

    sd: Tensors = {
        "embeddings.word_embeddings.weight": normal(arch.vocab_size, h),
        "embeddings.position_embeddings.weight": normal(arch.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": normal(arch.type_vocab_size, h),
        "embeddings.LayerNorm.weight": torch.ones(h),
        "embeddings.LayerNorm.bias": torch.zeros(h),
    }
    if arch.spec.pooler:
        sd["pooler.dense.weight"], sd["pooler.dense.bias"] = normal(h, h), torch.zeros(h)
    for n in range(arch.num_hidden_layers):
        p = f"encoder.layer.{n}."
        for name, (rows, cols) in {
            "attention.self.query": (h, h), "attention.self.key": (h, h),
            "attention.self.value": (h, h), "attention.output.dense": (h, h),
            "intermediate.dense": (i, h), "output.dense": (h, i),
        }.items():
            sd[f"{p}{name}.weight"] = normal(rows, cols)
            sd[f"{p}{name}.bias"] = torch.zeros(rows)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[f"{p}{ln}.weight"] = torch.ones(h)
            sd[f"{p}{ln}.bias"] = torch.zeros(h)
    return sd


def strip_prefix(sd: Mapping[str, torch.Tensor]) -> Tensors:
    """Checkpoints of head models keep the encoder under ``bert.`` (or another prefix)."""
    anchor = "embeddings.word_embeddings.weight"
    prefixes = [k[: -len(anchor)] for k in sd if k.endswith(anchor)]
    if not prefixes:
        raise UserError("checkpoint holds no BERT embeddings (embeddings.word_embeddings)")
    prefix = min(prefixes, key=len)
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


# DistilBERT's names for BERT's (regex on the name after the model prefix).
_DISTILBERT_NAMES = (
    (r"^transformer\.layer\.", "encoder.layer."),
    (r"\.attention\.q_lin\.", ".attention.self.query."),
    (r"\.attention\.k_lin\.", ".attention.self.key."),
    (r"\.attention\.v_lin\.", ".attention.self.value."),
    (r"\.attention\.out_lin\.", ".attention.output.dense."),
    (r"\.sa_layer_norm\.", ".attention.output.LayerNorm."),
    (r"\.ffn\.lin1\.", ".intermediate.dense."),
    (r"\.ffn\.lin2\.", ".output.dense."),
    (r"\.output_layer_norm\.", ".output.LayerNorm."),
)


def bert_names(sd: Mapping[str, torch.Tensor]) -> Tensors:
    """The encoder's weights under HF BERT's names, whatever the family (RoBERTa, XLM-R and
    ELECTRA use BERT's under another prefix; DistilBERT its own)."""
    w = strip_prefix(sd)
    if not any(k.startswith("transformer.layer.") for k in w):
        return w
    out = {}
    for k, v in w.items():
        for pattern, repl in _DISTILBERT_NAMES:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def split_weights(sd: Mapping[str, torch.Tensor], arch: BertArch) -> tuple[
        Tensors, list[dict[str, Tensors]], Tensors | None]:
    """HF names → (embeddings, [per layer: kind → weights], pooler or None), float32, under
    the names each op kind's ``make_weights`` uses. A family without token types gets one
    all-zero type row."""
    w = bert_names(sd)
    if not arch.spec.token_types:
        word = w["embeddings.word_embeddings.weight"]
        w["embeddings.token_type_embeddings.weight"] = word.new_zeros(1, arch.hidden_size)

    def get(name: str) -> torch.Tensor:
        if name not in w:
            raise UserError(f"checkpoint is missing {name}")
        return w[name].float()

    emb = {"word": get("embeddings.word_embeddings.weight"),
           "position": get("embeddings.position_embeddings.weight"),
           "token_type": get("embeddings.token_type_embeddings.weight"),
           "ln_weight": get("embeddings.LayerNorm.weight"),
           "ln_bias": get("embeddings.LayerNorm.bias")}
    layers = []
    for n in range(arch.num_hidden_layers):
        p = f"encoder.layer.{n}."
        layers.append({
            "qkv_proj": {f"{s}_{t}": get(f"{p}attention.self.{full}.{t}")
                         for s, full in (("q", "query"), ("k", "key"), ("v", "value"))
                         for t in ("weight", "bias")},
            "attention": {},
            "attn_out": {"weight": get(f"{p}attention.output.dense.weight"),
                         "bias": get(f"{p}attention.output.dense.bias"),
                         "ln_weight": get(f"{p}attention.output.LayerNorm.weight"),
                         "ln_bias": get(f"{p}attention.output.LayerNorm.bias")},
            "ffn_up": {"weight": get(f"{p}intermediate.dense.weight"),
                       "bias": get(f"{p}intermediate.dense.bias")},
            "ffn_down": {"weight": get(f"{p}output.dense.weight"),
                         "bias": get(f"{p}output.dense.bias"),
                         "ln_weight": get(f"{p}output.LayerNorm.weight"),
                         "ln_bias": get(f"{p}output.LayerNorm.bias")},
        })
    pool = None  # models built without a pooler (e.g. BertForMaskedLM) have none
    if "pooler.dense.weight" in w:
        pool = {"weight": get("pooler.dense.weight"), "bias": get("pooler.dense.bias")}
    return emb, layers, pool
