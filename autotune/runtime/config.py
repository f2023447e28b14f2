"""Loading a TunedConfig safely: schema-checked JSON, allowlisted variants, checked params.

Nothing named in the file is ever imported, evaluated or unpickled: variant names are looked
up in the registry, and every parameter is checked against that variant's search space.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from autotune import SCHEMA_VERSION
from autotune.errors import UserError
from autotune.fingerprint import machine
from autotune.models.bert import BertArch, Bucket
from autotune.models.kinds import KINDS, OP_KINDS
from autotune.runtime import jsonschema_lite
from autotune.space import Value

MAX_CONFIG_BYTES = 16 * 2**20


class ConfigError(UserError, ValueError):
    """A tuned config that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Choice:
    bucket: Bucket
    variant: str
    params: dict[str, Value]
    latency_ms: float
    baseline_ms: float
    rel_error: float
    #: encoder layers this choice is for, instead of its bucket's default (empty: the default)
    layers: tuple[int, ...] = ()

    @property
    def all_params(self) -> dict[str, Value]:
        return {"variant": self.variant, **self.params}


@dataclass(frozen=True)
class TunedConfig:
    model_name: str
    arch: BertArch
    device: str
    machine: dict[str, Any]
    software: dict[str, Any]
    max_rel_error: float
    pad_to_multiple: int
    varlen: bool
    threads: int  # > 0: every op runs on this many threads (switching per op costs)
    ops: dict[str, tuple[Choice, ...]]  # per kind, one default choice per bucket
    raw: dict[str, Any]
    cuda_graphs: int = 0  # > 0: replay CUDA graphs for batches up to this size (CUDA only)
    #: per kind, choices for some encoder layers of a bucket instead of its default (a
    #: per-layer composition: e.g. the layer whose int8 error broke the bound in bfloat16)
    layer_ops: dict[str, tuple[Choice, ...]] = field(default_factory=dict)
    #: per kind, the calibrated range of its GEMM's input in each call of a forward pass
    #: (``x_min``, ``x_max`` per input channel): what its ``int8_static`` choices quantize with
    calibration: dict[str, tuple[dict[str, torch.Tensor], ...]] = field(default_factory=dict)


def config_dict(model_name: str, arch: BertArch, device: str, max_rel_error: float,
                ops: dict[str, list[dict[str, Any]]], pad_to_multiple: int = 1,
                varlen: bool = False, threads: int = 0, cuda_graphs: int = 0,
                calibration: dict[str, list[dict[str, torch.Tensor]]] | None = None,
                ) -> dict[str, Any]:
    """A TunedConfig as JSON-ready data; ``ops`` maps kind → entries with ``bucket``,
    ``variant``, ``params``, ``latency_ms``, ``baseline_ms`` and ``rel_error``. ``threads``
    > 0 runs every op on that many threads (0: each op's own choice); ``cuda_graphs`` > 0
    replays a captured CUDA graph per shape for batches up to that size; ``calibration``
    maps kind → per call of a forward pass the input range (``x_min``, ``x_max``) its
    ``int8_static`` choices quantize with (written for the kinds that have such choices)."""
    from datetime import UTC, datetime

    from autotune.fingerprint import software

    return {
        "schema": SCHEMA_VERSION,
        "model": {"name": model_name, "architecture_hash": arch.hash,
                  "architecture": arch.to_dict()},
        "device": device,
        "machine": machine(device),
        "software": software(device),
        "tolerance": {"max_rel_error": max_rel_error},
        "layout": {"pad_to_multiple": pad_to_multiple, "varlen": varlen, "threads": threads,
                   **({"cuda_graphs": cuda_graphs} if cuda_graphs else {})},
        "ops": {k: ops[k] for k in OP_KINDS if k in ops},
        **({"calibration": {
            k: [{"min": _floats(r["x_min"]), "max": _floats(r["x_max"])} for r in calibration[k]]
            for k in OP_KINDS if k in calibration and k in static}}
           if calibration and (static := _static_kinds(ops)) else {}),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


#: the variants that quantize with a calibrated input range, shipped in the config
STATIC_VARIANTS = ("int8_static",)


def _static_kinds(ops: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {k for k, entries in ops.items() if any(e["variant"] in STATIC_VARIANTS
                                                    for e in entries)}


def _floats(t: torch.Tensor) -> list[float]:
    """Seven significant digits: a float32's, in a third of repr's characters."""
    return [float(f"{v:.7g}") for v in t.tolist()]


@cache
def _schema_text() -> str:
    return resources.files("autotune").joinpath("schema/tuned_config.schema.json").read_text()


def schema() -> dict[str, Any]:
    """The JSON Schema of tuned configs shipped in the package (a fresh copy)."""
    return dict(json.loads(_schema_text()))


@cache
def _parsed_schema() -> dict[str, Any]:
    return schema()


@cache
def _spaces(device: str) -> dict[str, Any]:
    """The shipped search spaces, parsed once per process (the model-level study and
    ``apply`` on many models parse many configs)."""
    from autotune.search.spaces import load_spaces
    from autotune.settings import DEFAULT_SPACES_DIR

    return load_spaces(DEFAULT_SPACES_DIR, device, suffix=".json")  # no YAML parser


def _reject_constant(name: str) -> float:
    raise ConfigError(f"non-finite number {name} in tuned config")


def read_json(source: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(source, dict):
        return source, "<config>"
    path = Path(source)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read tuned config ({e.strerror})") from None
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data, str(path)


def parse_config(source: str | Path | dict[str, Any]) -> TunedConfig:
    """Validate ``source`` (a path or parsed JSON) and return it as a ``TunedConfig``."""
    from autotune.ops import get_variant

    data, where = read_json(source)
    if data.get("schema") != SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema: version {data.get('schema')!r} is not supported "
                          f"(this autotune reads version {SCHEMA_VERSION})")
    errors = jsonschema_lite.check(data, _parsed_schema())
    if errors:
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ConfigError(f"{where}: {errors[0]}{more}")
    arch = BertArch(**data["model"]["architecture"])
    if arch.hash != data["model"]["architecture_hash"]:
        raise ConfigError(f"{where}: model.architecture_hash does not match model.architecture")
    device = data["device"]
    spaces = _spaces(device)
    ops: dict[str, tuple[Choice, ...]] = {}
    layer_ops: dict[str, tuple[Choice, ...]] = {}
    for kind, entries in data["ops"].items():
        choices: list[Choice] = []
        overrides: list[Choice] = []
        for i, e in enumerate(entries):
            field = f"ops.{kind}[{i}]"
            try:
                get_variant(kind, device, e["variant"])
            except KeyError:
                raise ConfigError(f"{where}: {field}.variant: unknown variant "
                                  f"{e['variant']!r} for {kind} on {device}") from None
            params = {"variant": e["variant"], **e["params"]}
            problems = spaces[kind].check(params)
            if problems:
                raise ConfigError(f"{where}: {field}.params.{problems[0]}")
            b = Bucket(e["bucket"]["batch"], e["bucket"]["seq"])
            if b.seq > arch.max_seq:
                raise ConfigError(f"{where}: {field}.bucket.seq: {b.seq} exceeds the model's "
                                  f"longest input ({arch.max_seq} tokens)")
            layers = tuple(sorted(set(e.get("layers", ()))))
            if layers and not KINDS[kind].per_layer:
                raise ConfigError(f"{where}: {field}.layers: {kind} runs once per forward "
                                  "pass, not per layer")
            if layers and layers[-1] >= arch.num_hidden_layers:
                raise ConfigError(f"{where}: {field}.layers: layer {layers[-1]} of a model "
                                  f"with {arch.num_hidden_layers}")
            (overrides if layers else choices).append(Choice(
                b, e["variant"], dict(e["params"]), e["latency_ms"], e["baseline_ms"],
                e["rel_error"], layers))
        _check_buckets(kind, choices, overrides, where)
        ops[kind] = tuple(sorted(choices, key=lambda c: (c.bucket.batch * c.bucket.seq,
                                                          c.bucket.batch)))
        if overrides:
            layer_ops[kind] = tuple(overrides)
    calibration = _calibration(data, arch, ops, layer_ops, where)
    layout = data["layout"]
    graphs = int(layout.get("cuda_graphs", 0))
    if graphs and device != "cuda":
        raise ConfigError(f"{where}: layout.cuda_graphs: CUDA graphs need device 'cuda', "
                          f"not {device!r}")
    if graphs and layout["varlen"]:
        raise ConfigError(f"{where}: layout.cuda_graphs: padding-free (varlen) shapes depend "
                          "on the data, so they cannot be captured in a CUDA graph")
    return TunedConfig(data["model"]["name"], arch, device, data["machine"], data["software"],
                       data["tolerance"]["max_rel_error"], layout["pad_to_multiple"],
                       layout["varlen"], layout.get("threads", 0), ops, data, graphs,
                       layer_ops, calibration)


def _calibration(data: dict[str, Any], arch: BertArch, ops: dict[str, tuple[Choice, ...]],
                 layer_ops: dict[str, tuple[Choice, ...]], where: str,
                 ) -> dict[str, tuple[dict[str, torch.Tensor], ...]]:
    """The calibrated input ranges, one per call of the kind in a forward pass; an error
    where an ``int8_static`` choice has none."""
    out: dict[str, tuple[dict[str, torch.Tensor], ...]] = {}
    for kind, entries in data.get("calibration", {}).items():
        field = f"calibration.{kind}"
        if len(entries) != KINDS[kind].count(arch):
            raise ConfigError(f"{where}: {field}: {len(entries)} ranges for a kind called "
                              f"{KINDS[kind].count(arch)} times per forward pass")
        ranges = []
        for n, e in enumerate(entries):
            lo, hi = torch.tensor(e["min"]), torch.tensor(e["max"])
            if lo.shape != hi.shape or not bool((lo <= hi).all()):
                raise ConfigError(f"{where}: {field}[{n}]: min and max must have one value "
                                  "per input channel, min <= max")
            ranges.append({"x_min": lo, "x_max": hi})
        out[kind] = tuple(ranges)
    for kind in {*ops, *layer_ops}:
        if kind not in out and any(c.variant in STATIC_VARIANTS for c in
                                   (*ops.get(kind, ()), *layer_ops.get(kind, ()))):
            raise ConfigError(f"{where}: ops.{kind}: an int8_static choice needs the "
                              f"calibrated input ranges (calibration.{kind}), and there are "
                              "none")
    return out


def _check_buckets(kind: str, defaults: list[Choice], overrides: list[Choice],
                   where: str) -> None:
    """One default choice per bucket; a layer's choice in a bucket given once at most, in a
    bucket that has a default."""
    seen: set[Bucket] = set()
    for c in defaults:
        if c.bucket in seen:
            raise ConfigError(f"{where}: ops.{kind}: two choices for bucket {c.bucket.label}")
        seen.add(c.bucket)
    layers: set[tuple[Bucket, int]] = set()
    for c in overrides:
        if c.bucket not in seen:
            raise ConfigError(f"{where}: ops.{kind}: layer choices for bucket "
                              f"{c.bucket.label}, which has no choice for the other layers")
        for n in c.layers:
            if (c.bucket, n) in layers:
                raise ConfigError(f"{where}: ops.{kind}: two choices for layer {n} in bucket "
                                  f"{c.bucket.label}")
            layers.add((c.bucket, n))


def check_fit(config: TunedConfig, arch: BertArch, strict: bool = False) -> None:
    """A config for another model is an error; another machine or torch is a warning (an
    error when ``strict``): it still runs correctly, just not necessarily fastest."""
    if config.arch != arch:
        raise ConfigError(f"tuned config is for {config.model_name!r} (architecture "
                          f"{config.arch.hash}); this model's architecture is {arch.hash}")
    problems = []
    here = machine(config.device)["fingerprint"] \
        if config.device == "cpu" or torch.cuda.is_available() else None
    if here is not None and config.machine.get("fingerprint") != here:
        problems.append("it was tuned on another machine "
                        f"({config.machine.get('cpu', config.machine.get('gpu', '?'))})")
    if config.software.get("torch") != torch.__version__:
        problems.append(f"it was tuned with torch {config.software.get('torch')}, "
                        f"this is {torch.__version__}")
    if problems:
        msg = "tuned config may not be the fastest here: " + "; ".join(problems)
        if strict:
            raise ConfigError(msg)
        warnings.warn(msg, stacklevel=3)
