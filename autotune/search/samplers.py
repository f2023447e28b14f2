"""Sampler factory. TPE and GP are constraint-aware (the driver sets each trial's constraint).
Grid search is done by enqueueing every config (see ``driver``), since Optuna's GridSampler
cannot express conditional parameters."""

from __future__ import annotations

import warnings

import optuna

from autotune.errors import UserError

SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes")
DEFAULT_SAMPLER = "tpe"
# Every new config of a default search is a best-first hill-climbing step (see loop); the
# sampler starts the climb and proposes when no step is left. Replay chose 1 over every 2nd
# config on our recordings and on Kernel Tuner's (benchmarks/RESULTS.md).
DEFAULT_LOCAL_EVERY = 1
# Every fourth step first tries a recombination of two of the best configs (see loop): on our
# recordings it finds what needs two parameters changed together (attn_out: median trials to
# 1% 24 -> 14); on Kernel Tuner's files it helped at seeds 0-19 but its A100 median swings
# with the seeds (152 at 0-19, 290 at 0-39; benchmarks/RESULTS.md).
DEFAULT_RECOMBINE_EVERY = 4
# After 15 new configs without a new best, steps breed from the best configs instead (a genetic
# algorithm's step, see loop): the climb alone got stuck for hundreds of configs in local
# optima on Kernel Tuner's A100 file (median trials to 1% over 200 seeds 270 -> 168 in a
# stand-alone copy of the loop; the live loop's medians there swing with the seeds: 160 on
# seeds 0-19, 241.5 on 20-99); on our recordings the medians did not move. Every second
# of these steps measures the child a surrogate model predicts fastest of 8 (loop._screened):
# live loop, 200 seeds, median trials to 1% A100 174 -> 146, A4000 119.5 -> 126 (noise: the
# same algorithm with other random streams gave 131 / 120.5; benchmarks/RESULTS.md).
DEFAULT_EVOLVE_AFTER = 15


def make_sampler(name: str, seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    # Feasibility reaches the samplers through ``trial.set_constraint`` (set by the driver).
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "tpe":
        # Multivariate, grouped TPE models the conditional spaces jointly; a third of the
        # budget (at least 5) explores at random first.
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=max(5, n_trials // 3))
    if name in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=max(5, n_trials // 3),
            warn_independent_sampling=False)
    if name == "cmaes":
        # CMA-ES models the numeric parameters; categorical ones are drawn at random. It ignores
        # constraints (infeasible configs still rank by time) and says so on every trial.
        warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler")
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=max(5, n_trials // 10), warn_independent_sampling=False)
    raise UserError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
