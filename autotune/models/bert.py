"""BERT architectures as data, model resolution, and the per-operator workload.

``resolve_model`` accepts a known name, a local directory with ``config.json`` or a hub id.
Weights are only needed end to end; per-operator tuning uses random weights of the same
shapes because timings do not depend on weight values.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from autotune.errors import UserError
from autotune.fingerprint import short_hash
from autotune.models.kinds import KINDS


@dataclass(frozen=True)
class Family:
    """What a BERT-style encoder family does differently from BERT: the operators are the
    same seven kinds, the config keys, weight names, embeddings rule and pooler are not."""

    model_type: str  # HF config ``model_type``
    title: str  # how people write it
    hf_class: str  # the transformers base model class
    token_types: bool  # the model takes token_type_ids
    pooler: bool  # the base model has a pooler layer
    # RoBERTa: position ids count the non-padding tokens from ``pad_token_id + 1`` (padding
    # tokens get ``pad_token_id``), so ``pad_token_id + 1`` positions are never a token's
    offset_positions: bool = False
    config_keys: tuple[tuple[str, str], ...] = ()  # (HF key, BertArch field) renames
    #: (regex, replacement) from the family's weight names to BERT's, after the model prefix
    weight_renames: tuple[tuple[str, str], ...] = ()


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("bert", "BERT", "BertModel", token_types=True, pooler=True),
    Family("roberta", "RoBERTa", "RobertaModel", token_types=True, pooler=True,
           offset_positions=True),
    Family("xlm-roberta", "XLM-RoBERTa", "XLMRobertaModel", token_types=True, pooler=True,
           offset_positions=True),
    Family("electra", "ELECTRA", "ElectraModel", token_types=True, pooler=False),
    Family("distilbert", "DistilBERT", "DistilBertModel", token_types=False, pooler=False,
           config_keys=(("dim", "hidden_size"), ("n_layers", "num_hidden_layers"),
                        ("n_heads", "num_attention_heads"), ("hidden_dim", "intermediate_size"),
                        ("activation", "hidden_act")),
           weight_renames=((r"^transformer\.layer\.", "encoder.layer."),
                           (r"\.attention\.q_lin\.", ".attention.self.query."),
                           (r"\.attention\.k_lin\.", ".attention.self.key."),
                           (r"\.attention\.v_lin\.", ".attention.self.value."),
                           (r"\.attention\.out_lin\.", ".attention.output.dense."),
                           (r"\.sa_layer_norm\.", ".attention.output.LayerNorm."),
                           (r"\.ffn\.lin1\.", ".intermediate.dense."),
                           (r"\.ffn\.lin2\.", ".output.dense."),
                           (r"\.output_layer_norm\.", ".output.LayerNorm."))),
)}


@dataclass(frozen=True)
class BertArch:
    """The numbers that fix every operator's shapes (HF ``BertConfig`` field names)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    family: str = "bert"  # a key of FAMILIES
    pad_token_id: int = 0  # read for offset positions (RoBERTa) only; 0 elsewhere

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise UserError(f"unknown model family {self.family!r}; supported: "
                            f"{', '.join(FAMILIES)}")
        if self.max_seq < 1:
            raise UserError(f"max_position_embeddings {self.max_position_embeddings} leaves "
                            "no positions for tokens")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"architecture field {name} must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]

    @property
    def max_seq(self) -> int:
        """The longest input: RoBERTa-style offsets take ``pad_token_id + 1`` positions."""
        if self.spec.offset_positions:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @property
    def n_token_types(self) -> int:
        """Token types the model takes as input: 0 (no token_type_ids), 1 (all zero) or more."""
        return self.type_vocab_size if self.spec.token_types else 0

    def to_dict(self) -> dict[str, Any]:
        """The fields; BERT's leave out the family fields, so that configs of BERT models
        written before families existed keep their architecture hash."""
        d = asdict(self)
        if self.family == "bert":
            del d["family"], d["pad_token_id"]
        return d

    @property
    def hash(self) -> str:
        return short_hash(self.to_dict())

    def describe(self) -> str:
        """One line for people: family and sizes."""
        return (f"{self.spec.title}, {self.num_hidden_layers} layers, hidden {self.hidden_size}, "
                f"{self.num_attention_heads} heads, FFN {self.intermediate_size}, vocab "
                f"{self.vocab_size}")

    def hf_config(self) -> Any:
        """The transformers config of this architecture in its family (eager attention);
        needs ``transformers``."""
        from transformers import AutoConfig

        fields = {k: v for k, v in self.to_dict().items() if k not in ("family", "pad_token_id")}
        back = {field: key for key, field in self.spec.config_keys}
        kwargs = {back.get(k, k): v for k, v in fields.items()}
        if self.spec.offset_positions:
            kwargs["pad_token_id"] = self.pad_token_id
        if self.family == "electra":
            kwargs["embedding_size"] = self.hidden_size
        cfg = AutoConfig.for_model(self.family, **kwargs)
        cfg._attn_implementation = "eager"
        return cfg

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], source: str) -> BertArch:
        model_type = cfg.get("model_type", "bert")
        family = FAMILIES.get(model_type)
        if family is None:
            raise UserError(f"{source}: model_type is {model_type!r}; supported: "
                            f"{', '.join(FAMILIES)}")
        cfg = {**cfg, **{field: cfg[key] for key, field in family.config_keys if key in cfg}}
        missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                               "num_attention_heads", "intermediate_size") if k not in cfg]
        if missing:
            raise UserError(f"{source}: not a {model_type} config, missing {', '.join(missing)}")
        if model_type == "electra" and cfg.get("embedding_size", cfg["hidden_size"]) != \
                cfg["hidden_size"]:
            raise UserError(f"{source}: ELECTRA with embedding_size {cfg['embedding_size']} ≠ "
                            f"hidden_size {cfg['hidden_size']} (a projection after the "
                            "embeddings) is not supported")
        act = cfg.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"{source}: hidden_act {act!r} is not supported")
        try:
            return cls(
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=int(cfg["hidden_size"]),
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                num_attention_heads=int(cfg["num_attention_heads"]),
                intermediate_size=int(cfg["intermediate_size"]),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 512)),
                # a family without token types gets one all-zero type row
                type_vocab_size=int(cfg.get("type_vocab_size", 2)) if family.token_types
                else 1,
                layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
                hidden_act=str(act),
                family=model_type,
                pad_token_id=int(cfg.get("pad_token_id") or 0) if family.offset_positions
                else 0,
            )
        except (TypeError, ValueError) as e:
            raise UserError(f"{source}: bad value in config: {e}") from None


KNOWN_ARCHITECTURES: dict[str, BertArch] = {
    "bert-base-uncased": BertArch(30522, 768, 12, 12, 3072),
    "bert-base-cased": BertArch(28996, 768, 12, 12, 3072),
    "bert-large-uncased": BertArch(30522, 1024, 24, 16, 4096),
    "bert-large-cased": BertArch(28996, 1024, 24, 16, 4096),
    "sentence-transformers/all-MiniLM-L6-v2": BertArch(30522, 384, 6, 12, 1536),
    "roberta-base": BertArch(50265, 768, 12, 12, 3072, 514, 1, 1e-5, family="roberta",
                             pad_token_id=1),
    "xlm-roberta-base": BertArch(250002, 768, 12, 12, 3072, 514, 1, 1e-5,
                                 family="xlm-roberta", pad_token_id=1),
    "distilbert-base-uncased": BertArch(30522, 768, 6, 12, 3072, 512, 1,
                                        family="distilbert"),
    "google/electra-base-discriminator": BertArch(30522, 768, 12, 12, 3072,
                                                  family="electra"),
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    arch: BertArch
    source: str  # "local", "hub", "hub-cache" or "builtin"
    path: Path | None = None
    notice: str | None = None


def _read_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{path}: no config.json in this directory")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_file}: malformed config.json ({e})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{cfg_file}: malformed config.json (not a JSON object)")
    return cfg


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the hub answers on its port; otherwise why not. Checked once, quickly, so
    that an offline machine does not sit through the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        return f"the hub ({host}) is unreachable: {e.strerror or type(e).__name__}"
    return None


def _hub_config(name: str, online: bool) -> tuple[dict[str, Any], Path] | str:
    """The config of a hub id from the local cache (or the hub when ``online``), else a reason."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        return "huggingface_hub is not installed"
    try:
        file = hf_hub_download(name, "config.json", local_files_only=True)
        return _read_config(Path(file).parent), Path(file).parent
    except HFValidationError:
        return f"{name!r} is not a valid model id"
    except Exception:  # not in the cache: fall through to the hub
        pass
    if not online:
        return "it is not in the local Hugging Face cache"
    unreachable = _hub_reachable()
    if unreachable:
        return unreachable
    try:
        file = hf_hub_download(name, "config.json", etag_timeout=5)
    except Exception as e:  # the hub client raises many types; all mean "not available"
        return f"the hub did not serve it ({type(e).__name__})"
    return _read_config(Path(file).parent), Path(file).parent


def resolve_model(model: str) -> ResolvedModel:
    """Find the architecture for ``model``: a local directory, a known name or a hub id.

    Known names never touch the network: their architecture is data here, and the local
    Hugging Face cache is used when it holds them.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        arch = BertArch.from_hf_config(_read_config(path), str(path))
        return ResolvedModel(path.resolve().name, arch, "local", path)
    if model.startswith((".", "/", "~")):
        raise UserError(f"{model}: no such directory")
    if model in KNOWN_ARCHITECTURES:
        found = _hub_config(model, online=False)
        if not isinstance(found, str):
            return ResolvedModel(model, BertArch.from_hf_config(found[0], model), "hub-cache",
                                 found[1])
        notice = (f"weights for {model} are not available ({found}); using its known "
                  "architecture with random weights (timings do not depend on weight values)")
        return ResolvedModel(model, KNOWN_ARCHITECTURES[model], "builtin", None, notice)
    found = _hub_config(model, online=True)
    if not isinstance(found, str):
        cfg, where = found
        return ResolvedModel(model, BertArch.from_hf_config(cfg, model), "hub", where)
    known = ", ".join(KNOWN_ARCHITECTURES)
    raise UserError(f"unknown model {model!r}: not a directory, not a known architecture "
                    f"({known}), and {found}")


@dataclass(frozen=True)
class Bucket:
    """One shape bucket of the workload: padded batch size and sequence length."""

    batch: int
    seq: int

    @property
    def label(self) -> str:
        return f"b{self.batch}s{self.seq}"


@dataclass(frozen=True)
class OpInstance:
    """One operator kind at one shape bucket, and how often a forward pass runs it."""

    kind: str
    bucket: Bucket
    shapes: dict[str, list[int]] = field(hash=False)
    count: int
    dtype: str = "float32"


#: Batch sizes and sequence lengths of the shape buckets when only one of the two is given.
DEFAULT_BATCH_SIZES = (1, 8)
DEFAULT_SEQ_LEN = 128


def default_buckets(arch: BertArch) -> list[Bucket]:
    """The shapes a default search tunes, smallest first: what production sends is batches of
    1-32 inputs of 16 tokens up to the model's maximum, and a shape no bucket covers runs the
    nearest bucket's choice. Token-wise GEMMs see 32, 128, 1,024 and 4,096 rows (every call
    of 16-16,384 rows within 4x of one); attention sees sequences of 32, 128 and the maximum
    (512 for BERT) at batch 1 and 8."""
    top = arch.max_seq
    short, mid, long = min(32, top), min(DEFAULT_SEQ_LEN, top), min(512, top)
    pairs = [(1, short), (1, mid), (8, mid), (8, long)]
    return [Bucket(b, s) for b, s in sorted(set(pairs), key=lambda p: (p[0] * p[1], p[0]))]


def workload(arch: BertArch, buckets: list[Bucket]) -> list[OpInstance]:
    """Every operator kind of one forward pass, per bucket, with shapes and call counts."""
    out: list[OpInstance] = []
    for bk in buckets:
        if bk.seq > arch.max_seq:
            raise UserError(f"sequence length {bk.seq} exceeds the model's longest input "
                            f"({arch.max_seq} tokens)")
        for kind in KINDS.values():
            if kind.present(arch):
                out.append(OpInstance(kind.name, bk, kind.shapes(arch, bk), kind.count(arch)))
    return out
