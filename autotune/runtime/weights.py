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
from autotune.models.kinds import KINDS
from autotune.ops.registry import op_spec

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


def checkpoint_file(folder: Path) -> Path | None:
    """The weights file in ``folder`` (safetensors, else a torch file), or None."""
    return next((f for f in (folder / "model.safetensors", folder / "pytorch_model.bin")
                 if f.is_file()), None)


def read_checkpoint(folder: Path) -> Tensors | None:
    """The weights in ``folder`` (safetensors or a weights-only torch file), or None."""
    file = checkpoint_file(folder)
    if file is None:
        return None
    if file.suffix == ".safetensors":
        return read_safetensors(file)
    return dict(torch.load(file, map_location="cpu", weights_only=True))


def random_weights(arch: BertArch, seed: int = 0) -> Tensors:
    """Random weights under HF BERT's names (whatever the family: ``split_weights`` reads
    them), drawn as each op kind's ``make_weights`` draws them, with a pooler if the family
    has one and token types if it takes them."""
    gen = torch.Generator().manual_seed(seed)
    sd: Tensors = {}
    for kind in KINDS.values():
        if not kind.present(arch):
            continue
        for prefix in kind.checkpoint_prefixes(arch):
            made = op_spec(kind.name).make_weights(arch, gen)
            sd.update({prefix + hf: made[name] for name, hf in kind.weights.items()})
    if not arch.spec.token_types:
        del sd[KINDS["embeddings"].weights["token_type"]]
    return sd


def strip_prefix(sd: Mapping[str, torch.Tensor]) -> Tensors:
    """Checkpoints of head models keep the encoder under ``bert.`` (or another prefix)."""
    anchor = "embeddings.word_embeddings.weight"
    prefixes = [k[: -len(anchor)] for k in sd if k.endswith(anchor)]
    if not prefixes:
        raise UserError("checkpoint holds no BERT embeddings (embeddings.word_embeddings)")
    prefix = min(prefixes, key=len)
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def bert_names(sd: Mapping[str, torch.Tensor], arch: BertArch) -> Tensors:
    """The encoder's weights under HF BERT's names, whatever the family (RoBERTa, XLM-R and
    ELECTRA use BERT's under another prefix; DistilBERT renames them: its ``Family`` says how)."""
    w = strip_prefix(sd)
    if not arch.spec.weight_renames:
        return w
    out = {}
    for k, v in w.items():
        for pattern, repl in arch.spec.weight_renames:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def split_weights(sd: Mapping[str, torch.Tensor], arch: BertArch) -> dict[str, list[Tensors]]:
    """HF names → per op kind, the weights of each call of a forward pass (one per layer for
    the kinds inside the encoder layer), float32, under the names the kind's ``make_weights``
    uses. A kind the family has but the checkpoint lacks (a model built without a pooler, e.g.
    BertForMaskedLM) is left out; a family without token types gets one all-zero type row."""
    w = bert_names(sd, arch)
    types = KINDS["embeddings"].weights["token_type"]
    if not arch.spec.token_types:
        w[types] = w[KINDS["embeddings"].weights["word"]].new_zeros(1, arch.hidden_size)

    def get(name: str) -> torch.Tensor:
        if name not in w:
            raise UserError(f"checkpoint is missing {name}")
        return w[name].float()

    out: dict[str, list[Tensors]] = {}
    for kind in KINDS.values():
        prefixes = kind.checkpoint_prefixes(arch)
        if kind.needs and not all(prefixes[0] + hf in w for hf in kind.weights.values()):
            continue
        out[kind.name] = [{name: get(p + hf) for name, hf in kind.weights.items()}
                          for p in prefixes]
    return out
