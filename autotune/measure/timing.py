"""The one place that times CPU code: warm-up, calibrated inner loops, interleaved rounds,
median and IQR. Candidate and reference alternate so that machine noise hits both alike."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

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

    def __init__(self, calls: Sequence[Call], threads: int) -> None:
        self.calls = list(calls)
        self.i = 0
        self.threads = threads

    def enter(self) -> None:
        """Switch to this side's thread count, with one untimed call to absorb the switch."""
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
            self.calls[0]()

    def sample(self, inner: int, settle: int = 0) -> float:
        self.enter()
        for _ in range(settle):  # untimed: let this side's thread pool and caches wake up
            self.calls[self.i % len(self.calls)]()
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
    cand_threads: int = 0,
) -> tuple[Stats, Stats]:
    """Per-call time of ``candidate`` and ``reference``, each a list of calls (one per copy).

    With ``cand_threads`` the candidate's samples run at that thread count and the
    reference's at the count in force on entry; the switch happens outside the timed region,
    so neither side pays for the other's thread pool being resized.
    """
    stats = time_many({"cand": (candidate, cand_threads), "ref": (reference, 0)},
                      budget_s, min_rounds, max_rounds)
    return stats["cand"], stats["ref"]


def time_many(
    sides: Mapping[str, tuple[Sequence[Call], int]],
    budget_s: float = 1.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
    settle: int = 0,
) -> dict[str, Stats]:
    """Per-call time of each named side (its calls, one per weight copy, and its thread count;
    0 = the count in force on entry), measured in rounds that visit every side once in a
    rotating order, after a warm-up of every call.

    ``settle`` untimed calls start each sample: contenders with thread pools of their own
    (ONNX Runtime, inductor's OpenMP) otherwise charge their wake-up to whoever runs next."""
    entry = torch.get_num_threads()
    runs = {name: _Rotating(calls, threads or entry) for name, (calls, threads) in sides.items()}
    for r in runs.values():  # warm-up: every copy once (allocations, packing, JIT) ...
        r.enter()
        for c in r.calls:
            c()
    once = {name: max(r.sample(1), 1e-9) for name, r in runs.items()}  # ... and an estimate
    inner = {name: max(1, math.ceil(MIN_SAMPLE_S / t)) for name, t in once.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    deadline = time.perf_counter() + budget_s
    for rnd in range(max_rounds):
        shift = rnd % len(order)  # rotate who goes first, so drift hits every side alike
        for name in order[shift:] + order[:shift]:
            times[name].append(runs[name].sample(inner[name], settle))
        if rnd + 1 >= min_rounds and time.perf_counter() > deadline:
            break
    torch.set_num_threads(entry)  # leave the thread count as it was found
    return {name: Stats.of(t) for name, t in times.items()}


#: bytes written between timed calls to push the previous call's data out of L2 (at least
#: twice the cache; H100 and H200 carry 50-60 MiB)
MIN_FLUSH_BYTES = 256 << 20


def time_many_cuda(
    sides: Mapping[str, Sequence[Call]],
    budget_s: float = 1.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
) -> dict[str, Stats]:
    """Per-call GPU time of each named side, as ``time_many`` does on CPU: every call timed
    alone between CUDA events, after a write over the L2 cache (so no call runs from the
    previous one's cache), sides interleaved in rotating order, median and IQR."""
    device = torch.cuda.current_device()
    l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))
    flush = torch.empty(max(MIN_FLUSH_BYTES, 2 * l2) // 4, dtype=torch.int32, device="cuda")
    copies = {name: list(calls) for name, calls in sides.items()}
    for calls in copies.values():  # warm-up: compilation, autotuning, allocator
        for c in calls:
            c()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name in copies}
    order = list(copies)
    deadline = time.perf_counter() + budget_s
    for rnd in range(max_rounds):
        shift = rnd % len(order)
        events = []
        for name in order[shift:] + order[:shift]:
            calls = copies[name]
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            flush.fill_(rnd)
            start.record()
            calls[rnd % len(calls)]()
            end.record()
            events.append((name, start, end))
        torch.cuda.synchronize()
        for name, start, end in events:
            times[name].append(start.elapsed_time(end) / 1e3)
        if rnd + 1 >= min_rounds and time.perf_counter() > deadline:
            break
    return {name: Stats.of(t) for name, t in times.items()}
