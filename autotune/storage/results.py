"""Reading results back out of per-op studies: feasibility, counts, the ranking of configs.

Search, export, the model-level study and the report all judge a study the same way, so the
rules live here, next to the storage they read.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.FAIL)


def params_key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def feasible(res: dict[str, Any], tol: float) -> bool:
    """Measured, and within the tolerance of the float32 reference."""
    err = res.get("rel_error")
    return res.get("status") == "ok" and err is not None and err <= tol


def trial_counts(study: optuna.Study, tol: float) -> dict[str, int]:
    """Distinct configs by outcome (a repeated proposal answered by the cache counts once)."""
    first: dict[str, optuna.trial.FrozenTrial] = {}
    pruned = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.PRUNED:
            pruned += 1
        elif t.state in FINISHED:
            first.setdefault(params_key(t.params), t)
    complete = [t for t in first.values() if t.state == TrialState.COMPLETE]
    n_feasible = sum(1 for t in complete if feasible(t.user_attrs, tol))
    return {
        "feasible": n_feasible,
        "infeasible": len(complete) - n_feasible,
        "failed": len(first) - len(complete),
        "pruned": pruned,
    }


def precision_of(params: dict[str, Any]) -> str:
    if params.get("variant") == "int8_dynamic":
        return "int8"
    return str(params.get("precision", "float32"))


def ranked_configs(study: optuna.Study, tol: float, k: int) -> list[dict[str, Any]]:
    """Feasible distinct configs of a per-op study, best first (the re-measured winner
    leads), each as {params, cand_ms, ref_ms, rel_error}; at most ``k`` plus the fastest
    config of each higher precision, so that stepping back always has somewhere to go."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    final = study.user_attrs.get("final")
    rows = [final] if final and final.get("max_rel_error") == tol else []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: t.value if t.value is not None else float("inf")):
        a = t.user_attrs
        if feasible(a, tol):
            rows.append({"params": t.params, **{f: a.get(f) for f in (
                "cand_ms", "cand_iqr_ms", "ref_ms", "ref_iqr_ms", "rel_error")}})
    best_per_precision: set[str] = set()
    for r in rows:
        key = json.dumps(r["params"], sort_keys=True)
        if key in seen:
            continue
        prec = precision_of(r["params"])
        if len(out) < k or prec not in best_per_precision:
            out.append(r)
            seen.add(key)
            best_per_precision.add(prec)
    return out
