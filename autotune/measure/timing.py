"""The one place that times CPU code: warm-up, calibrated inner loops, interleaved rounds,
median and IQR. Candidate and reference alternate so that machine noise hits both alike."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Call = Callable[[], object]

#: Shortest sample worth timing; calls faster than this are looped inside one sample.
MIN_SAMPLE_S = 0.5e-3


@dataclass(frozen=True)
class Stats:
    median_ms: float
    iqr_ms: float
    n: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        ms = sorted(s * 1e3 for s in seconds)
        if len(ms) >= 4:
            q = statistics.quantiles(ms, n=4)
            iqr = q[2] - q[0]
        else:
            iqr = ms[-1] - ms[0]
        return cls(statistics.median(ms), iqr, len(ms))


class _Rotating:
    """Calls one function per weight copy in turn, so no copy stays hot in cache."""

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = list(calls)
        self.i = 0

    def sample(self, inner: int) -> float:
        n = len(self.calls)
        start = time.perf_counter()
        for _ in range(inner):
            self.calls[self.i % n]()
            self.i += 1
        return (time.perf_counter() - start) / inner


def time_interleaved(
    candidate: Sequence[Call],
    reference: Sequence[Call],
    budget_s: float = 1.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
) -> tuple[Stats, Stats]:
    """Per-call time of ``candidate`` and ``reference``, each a list of calls (one per copy)."""
    cand, ref = _Rotating(candidate), _Rotating(reference)
    for r in (cand, ref):  # warm-up: every copy once (allocations, packing, JIT) ...
        for c in r.calls:
            c()
    once = {r: max(r.sample(1), 1e-9) for r in (cand, ref)}  # ... and a first estimate
    inner = {r: max(1, math.ceil(MIN_SAMPLE_S / t)) for r, t in once.items()}
    times: dict[_Rotating, list[float]] = {cand: [], ref: []}
    deadline = time.perf_counter() + budget_s
    for rnd in range(max_rounds):
        order = (cand, ref) if rnd % 2 else (ref, cand)  # alternate who goes first
        for r in order:
            times[r].append(r.sample(inner[r]))
        if rnd + 1 >= min_rounds and time.perf_counter() > deadline:
            break
    return Stats.of(times[cand]), Stats.of(times[ref])
