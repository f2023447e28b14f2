"""What the report shows, as pure functions of the values ``read`` collected.

No database, no plotly: each function takes plain values and returns plain values, so the
numbers on the page are tested on their own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from autotune.models.bert import BertArch, Bucket, workload
from autotune.models.kinds import KINDS, OP_KINDS, op_cost
from autotune.ops.registry import precision_of
from autotune.report.read import ReportInput, StudyView, TrialView
from autotune.storage.results import params_key


@dataclass(frozen=True)
class OpRow:
    """One op kind in one shape bucket: its reference, the shipped choice, its trials."""

    kind: str
    batch: int
    seq: int
    count: int  # calls per forward pass
    ref_ms: float | None
    best_ms: float | None
    variant: str | None
    params: dict[str, Any]
    precision: str | None
    rel_error: float | None
    counts: dict[str, int]
    study: str

    @property
    def bucket(self) -> str:
        return f"b{self.batch}s{self.seq}"

    @property
    def speedup(self) -> float | None:
        if self.ref_ms is None or not self.best_ms:
            return None
        return self.ref_ms / self.best_ms


def op_rows(inp: ReportInput) -> list[OpRow]:
    """One row per study, in forward-pass order within each bucket, with the config that the
    export ships at the report's tolerance (the model-level composition where there is one)."""
    shipped: dict[tuple[str, int, int], dict[str, Any]] = {}
    for kind, entries in (inp.config or {}).get("ops", {}).items():
        for e in entries:
            if "layers" not in e:  # the bucket's choice (some layers may run another)
                shipped[(kind, e["bucket"]["batch"], e["bucket"]["seq"])] = e
    counts = {(i.kind, i.bucket.batch, i.bucket.seq): i.count for i in workload(
        inp.arch, sorted({Bucket(s.batch, s.seq) for s in inp.studies},
                         key=lambda b: (b.batch, b.seq)))}
    rows = []
    for s in sorted(inp.studies, key=lambda s: (s.batch, s.seq, OP_KINDS.index(s.kind))):
        e = shipped.get((s.kind, s.batch, s.seq))
        params = dict(e["params"]) if e else {}
        variant = str(e["variant"]) if e else None
        rows.append(OpRow(
            kind=s.kind, batch=s.batch, seq=s.seq, count=counts[(s.kind, s.batch, s.seq)],
            ref_ms=e["baseline_ms"] if e else _reference_ms(s.trials),
            best_ms=e["latency_ms"] if e else None, variant=variant, params=params,
            precision=precision_of(s.kind, inp.device, {**params, "variant": e["variant"]})
            if e else None,
            rel_error=e["rel_error"] if e else None, counts=s.counts, study=s.name))
    return rows


def _reference_ms(trials: Sequence[TrialView]) -> float | None:
    refs = sorted(t.ref_ms for t in trials if t.ref_ms)
    return refs[len(refs) // 2] if refs else None


@dataclass(frozen=True)
class Share:
    kind: str
    before_ms: float  # reference time of all its calls in one forward pass
    after_ms: float | None  # tuned time of the same calls (None: no feasible config)


def time_shares(rows: Iterable[OpRow]) -> dict[str, list[Share]]:
    """Per bucket, each op kind's time in one forward pass before and after tuning."""
    out: dict[str, list[Share]] = {}
    for r in rows:
        if r.ref_ms is None:
            continue
        after = None if r.best_ms is None else r.count * r.best_ms
        out.setdefault(r.bucket, []).append(Share(r.kind, r.count * r.ref_ms, after))
    return out


@dataclass(frozen=True)
class History:
    numbers: list[int]
    values: list[float]  # speed ratio of each complete trial
    feasible: list[bool]
    best_numbers: list[int]  # best feasible ratio so far, at each complete trial from the first
    best_values: list[float]


def history(study: StudyView, tol: float) -> History:
    numbers, values, ok, best_n, best_v = [], [], [], [], []
    best = math.inf
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.state != "COMPLETE" or t.value is None:
            continue
        feasible = t.rel_error is not None and t.rel_error <= tol
        numbers.append(t.number)
        values.append(t.value)
        ok.append(feasible)
        if feasible:
            best = min(best, t.value)
        if best < math.inf:
            best_n.append(t.number)
            best_v.append(best)
    return History(numbers, values, ok, best_n, best_v)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both minimised),
    ordered by the first coordinate."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_y = [], math.inf
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


@dataclass(frozen=True)
class ErrorPoint:
    number: int
    rel_error: float
    ratio: float
    feasible: bool
    on_front: bool
    params: dict[str, Any]


def latency_vs_error(study: StudyView, tol: float) -> list[ErrorPoint]:
    """Complete, distinct configs with their error and speed ratio; the front is the set of
    trade-offs no other config beats on both (error 0 is drawn at the axis floor)."""
    seen: dict[str, TrialView] = {}
    for t in study.trials:
        if t.state == "COMPLETE" and t.value is not None and t.rel_error is not None:
            seen.setdefault(params_key(t.params), t)
    trials = list(seen.values())
    front = set(pareto_front([(t.rel_error or 0.0, t.value or 0.0) for t in trials]))
    return [ErrorPoint(t.number, t.rel_error or 0.0, t.value or 0.0,
                       (t.rel_error or 0.0) <= tol, i in front, t.params)
            for i, t in enumerate(trials)]


@dataclass(frozen=True)
class Axis:
    name: str
    ticks: list[float]  # positions in [0, 1]
    labels: list[str]


@dataclass(frozen=True)
class Line:
    number: int
    ys: list[float]  # one position per axis, in [0, 1]; -0.08 where the parameter is unset
    ratio: float
    feasible: bool


UNSET_Y = -0.08  # where a line crosses an axis of a parameter its config does not have


def _scale(values: Sequence[float], log: bool) -> tuple[float, float, bool]:
    log = log and min(values) > 0
    f = (lambda v: math.log(v)) if log else (lambda v: v)
    lo, hi = f(min(values)), f(max(values))
    return lo, hi, log


def _position(v: float, lo: float, hi: float, log: bool) -> float:
    x = math.log(v) if log else v
    return 0.5 if hi == lo else (x - lo) / (hi - lo)


def parallel_coords(study: StudyView, tol: float) -> tuple[list[Axis], list[Line]]:
    """One axis per parameter (then error and speed ratio), one line per complete config."""
    trials = [p for p in latency_vs_error(study, tol)]
    axes: list[Axis] = []
    columns: list[list[float]] = [[] for _ in trials]
    for name, choices in study.choices.items():
        pos = {repr(c): (i / (len(choices) - 1) if len(choices) > 1 else 0.5)
               for i, c in enumerate(choices)}
        axes.append(Axis(name, list(pos.values()), [str(c) for c in choices]))
        for col, p in zip(columns, trials, strict=True):
            v = p.params.get(name)
            col.append(UNSET_Y if name not in p.params else pos.get(repr(v), 0.5))
    floor = min([p.rel_error for p in trials if p.rel_error > 0] or [1e-7]) / 3
    for name, getter in (("rel error", lambda p: max(p.rel_error, floor)),
                         ("time ratio", lambda p: p.ratio)):
        vals = [getter(p) for p in trials]
        if not vals:
            axes.append(Axis(name, [], []))
            continue
        lo, hi, log = _scale(vals, log=True)
        ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
        labels = [f"{math.exp(t) if log else t:.2g}" for t in ticks]
        if name == "rel error" and any(p.rel_error == 0 for p in trials):
            labels[0] = "0"  # exact results sit at the floor of the log axis
        axes.append(Axis(name, [_position(math.exp(t) if log else t, lo, hi, log)
                                for t in ticks], labels))
        for col, v in zip(columns, vals, strict=True):
            col.append(_position(v, lo, hi, log))
    lines = [Line(p.number, col, p.ratio, p.feasible) for p, col in zip(trials, columns,
                                                                        strict=True)]
    return axes, lines


@dataclass(frozen=True)
class FailureGroup:
    outcome: str  # failed (with the measurement status) or pruned
    reason: str
    count: int  # distinct configs
    studies: list[str]  # "kind bucket" where it happened
    example: dict[str, Any]


_NOISE = [(re.compile(r"0x[0-9a-fA-F]+"), "0x…"), (re.compile(r"/tmp/[^\s'\"]+"), "/tmp/…")]


def _normalise(reason: str) -> str:
    line = (reason.strip().splitlines() or ["(no reason recorded)"])[0]
    for pattern, repl in _NOISE:
        line = pattern.sub(repl, line)
    return line[:240]


def failure_groups(studies: Iterable[StudyView]) -> list[FailureGroup]:
    """Failed and pruned configs grouped by outcome and reason, largest group first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for s in studies:
        seen: set[str] = set()
        for t in s.trials:
            if t.state not in ("FAIL", "PRUNED"):
                continue
            key = params_key(t.params)
            if key in seen:
                continue
            seen.add(key)
            outcome = "pruned" if t.state == "PRUNED" else f"failed ({t.status or 'unknown'})"
            g = groups.setdefault((outcome, _normalise(t.reason)),
                                  {"count": 0, "studies": [], "example": t.params})
            g["count"] += 1
            where = f"{s.kind} {s.bucket}"
            if where not in g["studies"]:
                g["studies"].append(where)
    out = [FailureGroup(o, r, g["count"], g["studies"], g["example"])
           for (o, r), g in groups.items()]
    return sorted(out, key=lambda g: (-g.count, g.outcome, g.reason))


@dataclass(frozen=True)
class RoofPoint:
    kind: str
    bucket: str
    precision: str
    intensity: float  # FLOP per byte
    tuned_gflops: float
    ref_gflops: float
    ref_intensity: float


def roofline(rows: Iterable[OpRow], arch: BertArch) -> list[RoofPoint]:
    """Achieved GFLOP/s of each op (tuned at its precision, reference in float32)."""
    out = []
    for r in rows:
        if r.best_ms is None or r.ref_ms is None or r.precision is None:
            continue
        b = Bucket(r.batch, r.seq)
        flops, nbytes = op_cost(r.kind, arch, b, r.precision)
        _, ref_bytes = op_cost(r.kind, arch, b, "float32")
        out.append(RoofPoint(r.kind, r.bucket, r.precision, flops / nbytes,
                             flops / (r.best_ms * 1e-3) / 1e9, flops / (r.ref_ms * 1e-3) / 1e9,
                             flops / ref_bytes))
    return out


def roof(peak_gflops: float, gbps: float, intensities: Sequence[float]) -> list[float]:
    """The attainable GFLOP/s at each intensity: min(compute peak, bandwidth × intensity)."""
    return [min(peak_gflops, gbps * x) for x in intensities]


def bench_by_bucket(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Bench rows per bucket, the tuned model first, then peers fastest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["bucket"], []).append(r)
    for b in out.values():
        b.sort(key=lambda r: (r["peer"] != "tuned", r["median_ms"]))
    return out


@dataclass(frozen=True)
class GraphNode:
    id: str
    title: str
    detail: str  # chosen variant and precision, or the reason there is none
    shares: dict[str, float]  # bucket → share of the tuned forward pass, in [0, 1]
    in_layer: bool  # inside the repeated encoder layer


def forward_graph(rows: Sequence[OpRow]) -> list[GraphNode]:
    """BERT's operators in forward order (one encoder layer), each with its chosen variant
    (per bucket where they differ) and its share of the tuned forward pass in every bucket."""
    shares = time_shares(rows)
    totals = {b: sum(s.after_ms if s.after_ms is not None else s.before_ms for s in ss)
              for b, ss in shares.items()}
    nodes = []
    for kind in OP_KINDS:
        mine = [r for r in rows if r.kind == kind]
        if not mine:
            continue
        chosen = {r.bucket: f"{r.variant} {r.precision}" if r.variant
                  else "reference (none feasible)" for r in mine}
        detail = (next(iter(chosen.values())) if len(set(chosen.values())) == 1
                  else "; ".join(f"{b}: {c}" for b, c in chosen.items()))
        per_bucket = {}
        for b, ss in shares.items():
            for s in ss:
                if s.kind == kind and totals[b] > 0:
                    t = s.after_ms if s.after_ms is not None else s.before_ms
                    per_bucket[b] = t / totals[b]
        nodes.append(GraphNode(kind, kind, detail, per_bucket, KINDS[kind].per_layer))
    return nodes
