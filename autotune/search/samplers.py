"""Sampler factory. Grid search is done by enqueueing every config (see ``driver``), since
Optuna's GridSampler cannot express conditional parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import optuna

from autotune.errors import UserError

SAMPLERS = ("tpe", "random", "grid", "gp")


def constraint_values(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    """Feasible when ≤ 0: relative error minus the tolerance, stored by the driver."""
    return list(trial.user_attrs.get("constraint", [float("inf")]))


def make_sampler(name: str, seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    constraints: Callable[[optuna.trial.FrozenTrial], Sequence[float]] = constraint_values
    if name == "tpe":
        # Multivariate, grouped TPE models the conditional spaces jointly; a third of the
        # budget (at least 5) explores at random first.
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constraints_func=constraints,
            n_startup_trials=max(5, n_trials // 3), warn_independent_sampling=False)
    if name in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, constraints_func=constraints, n_startup_trials=max(5, n_trials // 3),
            warn_independent_sampling=False)
    raise UserError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
