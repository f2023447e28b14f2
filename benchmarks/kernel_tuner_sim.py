"""Kernel Tuner's own strategies on a brute-forced Kernel Tuner file, in its simulation mode
(every evaluation looked up in the file), scored like ``autotune replay``: distinct configs
evaluated until the best is within 1/3/5% of the file's best.

Needs ``pip install kernel_tuner`` (a benchmark dependency, not one of autotune's).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotune.search.kernel_tuner import higher_is_better
from autotune.search.landscape import read_json

#: Kernel Tuner strategies compared by default: its best on these files (genetic algorithm,
#: particle swarm, differential evolution) and the other families it ships.
STRATEGIES = ("genetic_algorithm", "pso", "diff_evo", "dual_annealing", "greedy_ils",
              "simulated_annealing", "bayes_opt")


def available() -> bool:
    try:
        import kernel_tuner  # noqa: F401
    except ImportError:
        return False
    return True


def best_so_far(path: Path, strategy: str, seed: int, budget: int) -> list[float]:
    """The best objective after each distinct config Kernel Tuner's ``strategy`` evaluated
    (inf before the first that ran)."""
    import kernel_tuner
    import numpy as np

    doc = read_json(path, "a Kernel Tuner file")
    objective = doc.get("objective", "time")
    higher = higher_is_better(objective)  # ranked by its inverse, as the import does
    keys: Sequence[str] = doc["tune_params_keys"]
    recorded = set(doc["cache"])

    def legal(p: dict[str, Any]) -> bool:
        """The file holds every legal config: the others broke the kernel's restrictions.
        (A function, not a lambda: Kernel Tuner parses lambdas' source.)"""
        return ",".join(str(p[k]) for k in keys) in recorded
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.json"  # simulation mode reads plain JSON
        cache.write_text(json.dumps(doc))
        random.seed(seed)
        np.random.seed(seed)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            results, _ = kernel_tuner.tune_kernel(
                doc["kernel_name"], "__global__ void k() {}", doc["problem_size"], [],
                doc["tune_params"], cache=str(cache), simulation_mode=True,
                strategy=strategy, strategy_options={"max_fevals": budget}, quiet=True,
                objective=objective, objective_higher_is_better=higher,
                restrictions=legal)
    seen: set[str] = set()
    curve: list[float] = []
    best = math.inf
    for r in results:
        key = ",".join(str(r[k]) for k in keys)
        if key in seen:
            continue
        seen.add(key)
        value = r.get(objective)
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            best = min(best, 1.0 / value if higher else float(value))
        curve.append(best)
    return curve[:budget]


def methodology_score(valid: Sequence[float], curves: Sequence[Sequence[float]],
                      budget: int) -> float | None:
    """The ``autotuning-methodology`` package's performance score over function evaluations:
    at each evaluation 1..``budget``, the median best-so-far over seeds, standardised against
    the package's calculated random search without replacement ((strategy - random) /
    (optimum - random): 0 is random search, 1 the optimum from the first evaluation), averaged
    over the budget. ``valid`` holds the objective of every config that ran; ``curves`` are
    best-so-far objectives per seed (inf before the first config that ran: counted as the
    worst). The package scores over tuning time by default; trials are what replay counts.
    None if the package is not installed."""
    try:
        from autotuning_methodology.baseline import RandomSearchCalculatedBaseline
        from autotuning_methodology.searchspace_statistics import SearchspaceStatistics
    except ImportError:
        return None
    import numpy as np

    dist = np.sort(np.asarray(valid, dtype=float))
    stats = SearchspaceStatistics.__new__(SearchspaceStatistics)  # the file loader wants T4
    stats.minimization = True
    stats.objective_performances_total_sorted = dist
    stats.objective_performances_total_sorted_nan = dist
    worst = float(dist[-1])
    padded = np.array([[min(v, worst) for v in (list(c) + [c[-1]] * (budget - len(c)))[:budget]]
                       for c in curves])
    curve = np.median(padded, axis=0)
    fevals = np.arange(1, budget + 1)
    baseline = RandomSearchCalculatedBaseline(stats)
    return float(np.mean(baseline.get_standardised_curve(fevals, curve, x_type="fevals")))
