"""Search spaces as data: typed parameters, ``when:`` conditions and named constraints.

A space file (``search_spaces/<device>/<kind>.yaml``) looks like::

    kind: ffn_up
    params:
      variant:   {type: categorical, choices: [dense, int8_dynamic]}
      precision: {type: categorical, choices: [float32, bfloat16], when: {variant: dense}}
      row_block: {type: pow2, low: 64, high: 1024, none: true}
      fused:     {type: bool}
      threads:   {type: int, low: 1, high: cores}
    constraints: [row_block_below_rows]

A parameter with ``when`` exists only while every named parameter (declared earlier) holds
one of the listed values. Constraints are names of functions registered in code with
``@constraint``; nothing in the file is ever evaluated. This module knows nothing of Optuna.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.errors import SpaceError

Value = str | int | bool
Params = dict[str, Value]
ConstraintFn = Callable[[Mapping[str, Value], Mapping[str, Any]], bool]

PARAM_TYPES = ("categorical", "int", "pow2", "bool")
_CONSTRAINTS: dict[str, tuple[ConstraintFn, str]] = {}


def constraint(name: str, doc: str) -> Callable[[ConstraintFn], ConstraintFn]:
    """Register ``fn(params, context) -> allowed`` under ``name`` for use in space files."""

    def deco(fn: ConstraintFn) -> ConstraintFn:
        _CONSTRAINTS[name] = (fn, doc)
        return fn

    return deco


def registered_constraints() -> dict[str, str]:
    return {name: doc for name, (_, doc) in _CONSTRAINTS.items()}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    choices: tuple[Value, ...]
    when: dict[str, tuple[Value, ...]] = field(default_factory=dict)

    def active(self, params: Mapping[str, Value]) -> bool:
        return all(params.get(k) in allowed for k, allowed in self.when.items())


@dataclass(frozen=True)
class Space:
    kind: str
    device: str
    params: tuple[Param, ...]
    constraints: tuple[str, ...]
    path: str
    baseline: Params | None = None  # the reference's own config, measured first

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def violated(self, params: Mapping[str, Value], context: Mapping[str, Any]) -> str | None:
        """Name of the first constraint ``params`` break, or None."""
        for name in self.constraints:
            fn, _ = _CONSTRAINTS[name]
            if not fn(params, context):
                return name
        return None

    def configs(self, context: Mapping[str, Any] | None = None) -> Iterator[Params]:
        """Every config (conditions applied; constraints too when ``context`` is given)."""

        def walk(i: int, chosen: Params) -> Iterator[Params]:
            if i == len(self.params):
                if context is None or self.violated(chosen, context) is None:
                    yield dict(chosen)
                return
            p = self.params[i]
            if not p.active(chosen):
                yield from walk(i + 1, chosen)
                return
            for v in p.choices:
                chosen[p.name] = v
                yield from walk(i + 1, chosen)
                del chosen[p.name]

        yield from walk(0, {})

    def size(self, context: Mapping[str, Any] | None = None, cap: int = 100_000) -> int:
        return sum(1 for _ in itertools.islice(self.configs(context), cap))

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """Problems that keep ``params`` from being a config of this space (empty if none)."""
        problems: list[str] = []
        chosen: Params = {}
        for p in self.params:
            if not p.active(chosen):
                if p.name in params:
                    problems.append(f"{p.name}: not used when {_fmt_when(p.when)}")
                continue
            if p.name not in params:
                problems.append(f"{p.name}: missing")
                continue
            v = params[p.name]
            # bool is an int in Python: compare types exactly so True never passes as 1.
            if not any(type(v) is type(c) and v == c for c in p.choices):
                problems.append(f"{p.name}: {v!r} is not one of {list(p.choices)}")
                continue
            chosen[p.name] = v
        known = {p.name for p in self.params}
        problems += [f"{k}: unknown parameter" for k in params if k not in known]
        return problems


def _fmt_when(when: Mapping[str, tuple[Value, ...]]) -> str:
    return " and ".join(f"{k} in {list(v)}" for k, v in when.items())


def _choices(path: str, key: str, spec: dict[str, Any], cores: int) -> tuple[Value, ...]:
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise SpaceError(path, f"{key}.type", f"unknown parameter type {kind!r} "
                         f"(expected one of {', '.join(PARAM_TYPES)})")
    allowed_keys = {"type", "when", "choices", "low", "high", "step", "none"}
    extra = set(spec) - allowed_keys
    if extra:
        raise SpaceError(path, key, f"unknown field(s) {', '.join(sorted(extra))}")
    if kind == "bool":
        return (False, True)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(path, f"{key}.choices", "must be a non-empty list")
        if not all(isinstance(c, str | int | bool) and not isinstance(c, float) for c in choices):
            raise SpaceError(path, f"{key}.choices", "must be strings, integers or booleans")
        if len(set(map(repr, choices))) != len(choices):
            raise SpaceError(path, f"{key}.choices", "choices repeat")
        return tuple(choices)

    def bound(name: str) -> int:
        v = spec.get(name)
        if v == "cores":
            return cores
        if not isinstance(v, int) or isinstance(v, bool):
            raise SpaceError(path, f"{key}.{name}", f"must be an integer or 'cores', got {v!r}")
        return v

    low, high = bound("low"), bound("high")
    if low > high:
        raise SpaceError(path, key, f"low {low} is above high {high}")
    if kind == "int":
        step = spec.get("step", 1)
        if not isinstance(step, int) or step < 1:
            raise SpaceError(path, f"{key}.step", "must be a positive integer")
        values: list[Value] = list(range(low, high + 1, step))
    else:
        if low < 1 or low & (low - 1) or high & (high - 1):
            raise SpaceError(path, key, "pow2 bounds must be powers of two >= 1")
        values = [1 << e for e in range(low.bit_length() - 1, high.bit_length())]
    if spec.get("none"):  # 0 means "do not apply" (e.g. no row blocking)
        values.insert(0, 0)
    return tuple(values)


def parse_space(data: Any, path: str, device: str, cores: int | None = None) -> Space:
    cores = cores or os.cpu_count() or 1
    if not isinstance(data, dict):
        raise SpaceError(path, "<top>", "expected a mapping with 'kind' and 'params'")
    extra = set(data) - {"kind", "params", "constraints", "description", "baseline"}
    if extra:
        raise SpaceError(path, "<top>", f"unknown key(s) {', '.join(sorted(extra))}")
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise SpaceError(path, "kind", "missing or not a string")
    raw = data.get("params")
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(path, "params", "empty space: declare at least one parameter")
    params: list[Param] = []
    seen: dict[str, Param] = {}
    for name, spec in raw.items():
        key = f"params.{name}"
        if not isinstance(spec, dict):
            raise SpaceError(path, key, "expected a mapping with a 'type'")
        choices = _choices(path, key, spec, cores)
        when_raw = spec.get("when", {})
        if not isinstance(when_raw, dict):
            raise SpaceError(path, f"{key}.when", "must be a mapping of parameter -> value(s)")
        when: dict[str, tuple[Value, ...]] = {}
        for dep, allowed in when_raw.items():
            if dep not in seen:
                raise SpaceError(path, f"{key}.when.{dep}",
                                 "refers to a parameter not declared before this one")
            vals = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            bad = [v for v in vals if v not in seen[dep].choices]
            if bad:
                raise SpaceError(path, f"{key}.when.{dep}",
                                 f"value(s) {bad} are not choices of {dep}")
            when[dep] = vals
        p = Param(str(name), spec["type"], choices, when)
        params.append(p)
        seen[p.name] = p
    names = data.get("constraints", []) or []
    if not isinstance(names, list):
        raise SpaceError(path, "constraints", "must be a list of names")
    for n in names:
        if n not in _CONSTRAINTS:
            known = ", ".join(sorted(_CONSTRAINTS)) or "none registered"
            raise SpaceError(path, f"constraints.{n}", f"unknown constraint (known: {known})")
    space = Space(kind, device, tuple(params), tuple(names), path)
    baseline = data.get("baseline")
    if baseline is not None:
        if not isinstance(baseline, dict):
            raise SpaceError(path, "baseline", "must be a mapping of parameter -> value")
        baseline = {k: cores if v == "cores" else v for k, v in baseline.items()}
        problems = space.check(baseline)
        if problems:
            raise SpaceError(path, "baseline", "; ".join(problems))
        space = dataclasses.replace(space, baseline=baseline)
    return space


def load_space(path: Path, device: str) -> Space:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpaceError(str(path), "<file>", f"cannot read ({e.strerror})") from None
    if path.suffix == ".json":  # the copies the runtime reads: no YAML parser needed
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpaceError(str(path), f"line {e.lineno}", f"malformed JSON ({e.msg})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "<yaml>"
            raise SpaceError(str(path), where,
                             f"malformed YAML ({getattr(e, 'problem', e)})") from None
    space = parse_space(data, str(path), device)
    if space.kind != path.stem:
        raise SpaceError(str(path), "kind", f"{space.kind!r} does not match the file name")
    return space
