"""Reading results back out of per-op studies: feasibility, counts, the ranking of configs.

Search, export, the model-level study and the report all judge a study the same way, so the
rules live here, next to the storage they read.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.measure.result import Status
from autotune.ops.registry import layout_key, precision_of

FINISHED = (TrialState.COMPLETE, TrialState.FAIL)


def params_key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def feasible(res: dict[str, Any], tol: float) -> bool:
    """Measured, and within the tolerance of the float32 reference."""
    err = res.get("rel_error")
    return res.get("status") == Status.OK and err is not None and err <= tol


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


def feasible_trials(study: optuna.Study, tol: float) -> list[optuna.trial.FrozenTrial]:
    """The first complete trial of each distinct feasible config, fastest first: the ranking
    that re-measurement, the model-level study and export all start from."""
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: t.value if t.value is not None else float("inf"))
    out: dict[str, optuna.trial.FrozenTrial] = {}
    for t in done:
        if feasible(t.user_attrs, tol):
            out.setdefault(params_key(t.params), t)
    return list(out.values())


def ranked_configs(study: optuna.Study, tol: float, k: int) -> list[dict[str, Any]]:
    """Feasible distinct configs of a per-op study, best first (the re-measured winner
    leads), each as {params, cand_ms, ref_ms, rel_error}: the fastest of up to ``k`` weight
    layouts (variant, precision, GEMM layout), the next fastest configs where the study has
    fewer, and the fastest and the most accurate config of each precision, so that stepping
    back always has somewhere to go. The ``k`` fastest configs are often one layout with
    another thread count or epilogue: neighbouring buckets warm-started from them and the
    model-level study choosing among them then never saw the other layouts (real MiniLM:
    transposed bfloat16 weights in every bucket, 16% slower end to end on real text than the
    oneDNN pack that the first bucket's study had ranked fifth, 3% behind in isolation)."""
    final = study.user_attrs.get("final")
    rows = [final] if final and final.get("max_rel_error") == tol else []
    rows += [{"params": t.params, **{f: t.user_attrs.get(f) for f in (
        "cand_ms", "cand_iqr_ms", "ref_ms", "ref_iqr_ms", "rel_error")}}
        for t in feasible_trials(study, tol)]
    kind, device = study.user_attrs["kind"], study.user_attrs.get("device", "cpu")
    distinct: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in rows:  # the re-measured winner is also among the trials: keep its first entry
        if params_key(r["params"]) not in seen:
            seen.add(params_key(r["params"]))
            distinct.append(r)
    layouts: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in distinct:
        layouts.setdefault(layout_key(r["params"]), r)
    firsts = [id(r) for r in list(layouts.values())[:k]]
    chosen = firsts + [id(r) for r in distinct if id(r) not in firsts][:k - len(firsts)]
    # each precision's most accurate config: where the fastest of a precision breaks the
    # end-to-end bound, a more accurate one of it can be faster than the next precision
    accurate: dict[str, dict[str, Any]] = {}
    for r in distinct:
        prec = precision_of(kind, device, r["params"])
        if prec not in accurate or r["rel_error"] < accurate[prec]["rel_error"]:
            accurate[prec] = r
    keep = set(chosen) | {id(r) for r in accurate.values()}
    out: list[dict[str, Any]] = []
    best_per_precision: set[str] = set()
    for r in distinct:  # in rank order: the chosen ones, and each higher precision's fastest
        prec = precision_of(kind, device, r["params"])
        if id(r) in keep or prec not in best_per_precision:
            out.append(r)
            best_per_precision.add(prec)
    return out
