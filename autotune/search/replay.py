"""Replay: run a sampler against a recorded landscape instead of measuring.

Each replay is the live trial loop (``loop.run_trials``) on an in-memory study whose
``measure`` looks the config up in the recording, so infeasible and failed configs behave as
they did live and constraints prune as they do live. Deterministic for a seed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from autotune.measure import MeasureResult
from autotune.search.landscape import Landscape
from autotune.search.loop import LoopPolicy, run_trials
from autotune.search.samplers import (
    DEFAULT_EVOLVE_AFTER,
    DEFAULT_LOCAL_EVERY,
    DEFAULT_RECOMBINE_EVERY,
    DEFAULT_SAMPLER,
    SAMPLERS,
    make_sampler,
)
from autotune.space import Params, Space
from autotune.storage.results import feasible

WITHIN = (0.01, 0.03, 0.05)  # "within 1%, 3%, 5% of the recording's best"


#: Strategies replay can run: a plain Optuna sampler, the same with a hill-climbing step on
#: every second new config ("+local", the default before replay on external spaces), or
#: "default", exactly what `autotune search` does when given no flags (a step on every new
#: config; the sampler starts the climb and proposes when no step is left).
STRATEGIES = (*SAMPLERS, "tpe+local", "random+local", "default")
HALF = 2  # "+local": every second new config is a step


def strategy(name: str) -> tuple[str, int, int, int]:
    """(sampler, local_every, recombine_every, evolve_after) of a replay strategy."""
    if name == "default":
        return DEFAULT_SAMPLER, DEFAULT_LOCAL_EVERY, DEFAULT_RECOMBINE_EVERY, DEFAULT_EVOLVE_AFTER
    sampler, _, local = name.partition("+")
    return sampler, HALF if local == "local" else 0, 0, 0


def replay_once(land: Landscape, space: Space, name: str, seed: int, budget: int,
                tol: float | None = None, warm: Sequence[Params] = (),
                patience: int | None = None) -> list[float]:
    """The best feasible time ratio after each distinct config (inf before the first
    feasible one); shorter than ``budget`` when the loop stopped early."""
    tol = land.max_rel_error if tol is None else tol
    sampler, local_every, recombine_every, evolve_after = strategy(name)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="minimize",
                                sampler=make_sampler(sampler, seed, budget))
    curve: list[float] = []
    best = math.inf
    last: list[MeasureResult] = []

    def measure(params: Params, trial: optuna.Trial) -> tuple[MeasureResult, bool]:
        res = land.lookup(params)
        last[:] = [res]
        return res, False

    def on_new() -> None:
        nonlocal best
        res = last[0]
        if res.ratio is not None and feasible(res.to_dict(), tol):
            best = min(best, res.ratio)
        curve.append(best)

    policy = LoopPolicy(budget, sampler, seed, tol, tuple(warm), patience, local_every,
                        recombine_every=recombine_every, evolve_after=evolve_after)
    run_trials(study, space, land.context, policy, measure, on_new=on_new)
    return curve


def trials_to_reach(curve: Sequence[float], target: float) -> float:
    """Distinct configs measured until the best is ≤ target (inf if never)."""
    for i, v in enumerate(curve):
        if v <= target:
            return float(i + 1)
    return math.inf


@dataclass(frozen=True)
class SamplerScore:
    sampler: str
    median_trials: dict[float, float]  # within → median trials to reach it (inf: not reached)
    reached: dict[float, float]  # within → share of seeds that reached it within the budget
    curves: list[list[float]]  # per seed: best ratio ÷ recording's best after each config

    @classmethod
    def of(cls, sampler: str, curves: list[list[float]]) -> SamplerScore:
        """Score best-so-far curves (relative to the recording's best), one per seed."""
        med = {w: statistics.median(trials_to_reach(c, 1 + w) for c in curves) for w in WITHIN}
        reached = {w: sum(trials_to_reach(c, 1 + w) < math.inf for c in curves) / len(curves)
                   for w in WITHIN}
        return cls(sampler, med, reached, curves)

    def median_curve(self) -> list[float]:
        n = max(len(c) for c in self.curves)
        padded = [c + [c[-1]] * (n - len(c)) if c else [math.inf] * n for c in self.curves]
        return [statistics.median(col) for col in zip(*padded, strict=True)]

    def to_json(self) -> dict[str, Any]:
        """As ``autotune replay --output`` writes it (and the report reads it)."""
        def num(v: float) -> float | None:
            return None if math.isinf(v) else v

        return {"median_trials": {f"{w:g}": num(v) for w, v in self.median_trials.items()},
                "reached": {f"{w:g}": v for w, v in self.reached.items()},
                "median_curve": [num(v) for v in self.median_curve()],
                "curves": [[num(v) for v in c] for c in self.curves]}


def score(land: Landscape, space: Space, sampler: str, seeds: int, budget: int,
          tol: float | None = None, warm: Sequence[Params] = (), patience: int | None = None,
          progress: Callable[[], None] = lambda: None) -> SamplerScore:
    best = land.best(tol)
    curves = []
    for seed in range(seeds):
        curve = replay_once(land, space, sampler, seed, budget, tol, warm, patience)
        curves.append([v / best for v in curve])
        progress()
    return SamplerScore.of(sampler, curves)
