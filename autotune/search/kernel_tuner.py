"""Kernel Tuner's brute-forced spaces as replayable landscapes.

Kernel Tuner caches every measured config of a kernel in a JSON file (optionally gzipped):
``tune_params`` (parameter → listed values), ``objective`` and ``cache`` (one entry per config
with its parameters and the objective's value, or the name of the failure: the config broke
at compile time, at run time, or broke the kernel's restrictions). Its newer T4 output format
(``results``, each with ``configuration``, ``measurements`` and ``invalidity``) carries the same.

The objective is lower-is-better (a time) unless it reads as a rate (``GFLOP/s``, ``GB/s``,
``...flops``) or the caller says otherwise: a higher-is-better objective is ranked by its
inverse (a rate becomes a time per unit of work, so "within 1% of the best" keeps its sense),
which needs every measured value to be positive.

Imported, the space is the product of the listed values and its one constraint is "a config
the file holds as legal": a proposal outside it is pruned and not counted, as Kernel Tuner's
restrictions keep it from being run. Failed configs are failed trials. The objective (lower is
better) is the ratio that replay ranks; nothing is checked for correctness, so every measured
config is feasible. The space travels in the landscape file, so replay needs no space file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from autotune.errors import UserError
from autotune.measure.result import Status
from autotune.search.landscape import read_json

#: Kernel Tuner's names for a config that broke its restrictions: not part of the space.
RESTRICTED = ("InvalidConfig", "constraints")


def higher_is_better(objective: str) -> bool:
    """Whether an objective's name reads as a rate, which is better higher."""
    name = objective.lower()
    return "/s" in name or name.endswith("flops")


def import_kernel_tuner(path: Path, higher: bool | None = None) -> dict[str, Any]:
    """The landscape document (see ``landscape``) of a Kernel Tuner cache or T4 file.
    ``higher``: whether the objective is better higher (None: from its name)."""
    doc = read_json(path, "a Kernel Tuner file")
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a Kernel Tuner file (expected a JSON object)")
    try:
        if "cache" in doc:
            kernel, device, objective, listed, rows = _from_cache(doc)
        elif "results" in doc:
            kernel, device, objective, listed, rows = _from_t4(doc)
        else:
            raise UserError(f"{path}: not a Kernel Tuner file (no 'cache' or 'results')")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: malformed Kernel Tuner file ({type(e).__name__}: {e})") \
            from None
    higher = higher_is_better(objective) if higher is None else higher
    configs = []
    for params, value in rows:
        if value in RESTRICTED:
            continue
        params = {k: _value(v) for k, v in params.items()}
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value):
            if value <= 0:
                raise UserError(f"{path}: {objective!r} is {value:g} for {params}; replay "
                                "ranks ratios to the best and needs positive values")
            configs.append({"params": params, "status": Status.OK.value, "reason": "",
                            "rel_error": 0.0, "ref_ms": 1.0,
                            "cand_ms": 1.0 / value if higher else float(value)})
        else:
            configs.append({"params": params, "status": Status.ERROR.value,
                            "reason": str(value) or "failed"})
    if not any(c["status"] == Status.OK for c in configs):
        raise UserError(f"{path}: no config with a measured {objective!r}")
    space = {"kind": kernel, "params": {k: _param([_value(v) for v in vs])
                                        for k, vs in listed.items()},
             "constraints": ["recorded_config"]}
    return {"kind": kernel, "device": device, "space": space, "context": {},
            "max_rel_error": 1.0, "configs": configs,
            "source": {"tool": "kernel_tuner", "file": path.name, "objective": objective,
                       "higher_is_better": higher, "problem_size": doc.get("problem_size")}}


def _from_cache(doc: dict[str, Any]) -> tuple[str, str, str, dict[str, list[Any]],
                                              list[tuple[dict[str, Any], Any]]]:
    objective = str(doc.get("objective") or "time")
    keys = list(doc.get("tune_params_keys") or doc["tune_params"])
    listed = {k: list(doc["tune_params"][k]) for k in keys}
    rows = [({k: entry[k] for k in keys}, entry[objective]) for entry in doc["cache"].values()]
    return (str(doc.get("kernel_name") or "kernel"), str(doc.get("device_name") or "unknown"),
            objective, listed, rows)


def _from_t4(doc: dict[str, Any]) -> tuple[str, str, str, dict[str, list[Any]],
                                           list[tuple[dict[str, Any], Any]]]:
    results = doc["results"]
    if not results:
        raise ValueError("no results")
    objective = str(doc.get("objective") or "time")
    listed: dict[str, list[Any]] = {}
    rows: list[tuple[dict[str, Any], Any]] = []
    for r in results:
        params = dict(r["configuration"])
        for k, v in params.items():
            if v not in listed.setdefault(k, []):
                listed[k].append(v)
        invalid = str(r.get("invalidity") or "correct")
        if invalid != "correct":
            rows.append((params, invalid))
            continue
        named = r.get("objectives") or [objective]
        values = {m["name"]: _mean(m["value"]) for m in r.get("measurements", [])}
        runtimes = (r.get("times") or {}).get("runtimes")
        if runtimes:  # the kernel's own timings, where no measurement is named
            values.setdefault("time", _mean(runtimes))
        objective = next((o for o in (str(named[0]), objective) if o in values),
                         next(iter(values), objective))
        rows.append((params, values.get(objective, "no measurement")))
    for k in listed:  # the file lists configs, not the values: order them
        listed[k].sort(key=lambda v: (isinstance(v, str), v))
    meta = doc.get("metadata") or {}
    return (str(meta.get("kernel_name") or doc.get("kernel_name") or "kernel"),
            str(meta.get("device_name") or meta.get("device") or doc.get("device_name")
                or "unknown"),
            objective, listed, rows)


def _mean(value: Any) -> Any:
    """A measurement as one number: a list of repeats (T4 allows one) becomes its mean."""
    if isinstance(value, list) and value and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return sum(value) / len(value)
    return value


def _value(v: Any) -> str | int | bool:
    """Space values are strings, integers or booleans: whole floats become integers, other
    floats their decimal text (still one value per listed value)."""
    if isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else repr(v)
    return json.dumps(v, sort_keys=True)


def _param(values: list[str | int | bool]) -> dict[str, Any]:
    """Evenly spaced integers as an ordered ``int`` parameter (samplers then know that 64 lies
    between 48 and 80), anything else as categorical."""
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if len(ints) == len(values) >= 2 and ints == sorted(ints):
        step = ints[1] - ints[0]
        if step > 0 and ints == list(range(ints[0], ints[-1] + 1, step)):
            return {"type": "int", "low": ints[0], "high": ints[-1], "step": step}
    return {"type": "categorical", "choices": values}
