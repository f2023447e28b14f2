"""Everything the report shows, read out of the database once into plain values.

The rest of the report (``data``, ``figures``, ``html``) works on these values only, so it is
tested without a database and never touches one while rendering.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import UserError
from autotune.export import build_config, matching_studies, newest_composition
from autotune.models.bert import BertArch
from autotune.storage.bench import latest_bench
from autotune.storage.results import params_key, trial_counts
from autotune.storage.runs import search_runs

_SAMPLER = optuna.samplers.RandomSampler()  # loading a study needs one; never used


@dataclass(frozen=True)
class TrialView:
    number: int
    state: str  # COMPLETE, FAIL, PRUNED, RUNNING, WAITING
    value: float | None  # candidate ms / reference ms
    params: dict[str, Any]
    status: str | None = None  # the measurement's status (ok, error, wrong, timeout, crash)
    reason: str = ""
    rel_error: float | None = None
    cand_ms: float | None = None
    ref_ms: float | None = None
    cached: bool = False


@dataclass(frozen=True)
class StudyView:
    name: str
    kind: str
    batch: int
    seq: int
    trials: tuple[TrialView, ...]
    choices: dict[str, tuple[Any, ...]]  # every parameter's possible values, in space order
    counts: dict[str, int]  # distinct configs: feasible / infeasible / failed, and pruned
    importances: dict[str, float] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return f"b{self.batch}s{self.seq}"


@dataclass(frozen=True)
class ReportInput:
    model: str
    device: str
    arch: BertArch
    machine: dict[str, Any]
    software: dict[str, Any]
    max_rel_error: float
    studies: tuple[StudyView, ...]
    config: dict[str, Any] | None  # what `autotune export` ships at this tolerance
    composition: dict[str, Any] | None  # the model-level study's winner, if one was run
    runs: tuple[dict[str, Any], ...]  # `autotune search` invocations, oldest first
    bench: tuple[dict[str, Any], ...]  # rows of the newest `autotune bench` run
    bench_date: datetime | None
    peaks: dict[str, Any] | None
    generated: datetime
    trial_span: tuple[datetime, datetime] | None = None  # first trial start, last trial end
    replays: tuple[dict[str, Any], ...] = ()  # `autotune replay --output` results to show


def _trial_view(t: FrozenTrial) -> TrialView:
    a = t.user_attrs
    return TrialView(number=t.number, state=t.state.name, value=t.value, params=dict(t.params),
                     status=a.get("status"), reason=str(a.get("reason") or ""),
                     rel_error=a.get("rel_error"), cand_ms=a.get("cand_ms"),
                     ref_ms=a.get("ref_ms"), cached=bool(a.get("cached")))


def _choices(trials: list[FrozenTrial]) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for t in trials:
        for name, d in t.distributions.items():
            if name in out:
                continue
            if isinstance(d, CategoricalDistribution):
                out[name] = tuple(d.choices)
            elif isinstance(d, IntDistribution):
                out[name] = tuple(range(d.low, d.high + 1, d.step))
    return out


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importance of each parameter for the speed ratio, over complete trials; empty
    when the study is too small or its parameters never vary."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len({params_key(t.params) for t in done}) < 3:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):
        return {}
    return {k: float(v) for k, v in imp.items()}


def read_study(study: optuna.Study, tol: float) -> StudyView:
    trials = study.get_trials(deepcopy=False)
    a = study.user_attrs
    return StudyView(name=study.study_name, kind=a["kind"], batch=a["batch"], seq=a["seq"],
                     trials=tuple(_trial_view(t) for t in trials), choices=_choices(trials),
                     counts=trial_counts(study, tol), importances=importances(study))


def pick_machine(storage: optuna.storages.BaseStorage, model: str, device: str,
                 here: str) -> str:
    """This machine's studies if it has any, else the only machine that has some."""
    found = sorted({str(s.user_attrs["machine"]) for s in storage.get_all_studies()
                    if s.user_attrs.get("autotune") and s.user_attrs.get("model") == model
                    and s.user_attrs.get("device") == device and s.user_attrs.get("machine")})
    if not found:
        models = sorted({str(s.user_attrs.get("model")) for s in storage.get_all_studies()
                         if s.user_attrs.get("autotune")})
        known = f"; it has {', '.join(map(repr, models))}" if models else " (it has none)"
        raise UserError(f"no studies of model {model!r} on {device} in this database{known}")
    if here in found:
        return here
    if len(found) == 1:
        return found[0]
    raise UserError(f"studies of {model!r} from several machines ({', '.join(found)}); "
                    "pick one with --machine")


def _composition(storage: optuna.storages.BaseStorage, model: str, device: str, machine: str,
                 tol: float) -> dict[str, Any] | None:
    found = newest_composition(storage, model, device, machine, tol)
    if found is None:
        return None
    final, attrs = found
    return {**{k: v for k, v in final.items() if k != "config"}, "lengths": attrs.get("lengths")}


def read_report_input(url: str, storage: optuna.storages.BaseStorage, model: str, device: str,
                      here: str, max_rel_error: float | None = None, machine: str | None = None,
                      peaks: dict[str, Any] | None = None) -> ReportInput:
    """Read the studies, exported config, runs and bench rows of ``model`` on one machine."""
    machine = machine or pick_machine(storage, model, device, here)
    runs = tuple(search_runs(url, model, device, machine))
    studies = matching_studies(storage, model, device, machine)
    if not studies:
        raise UserError(f"no per-operator studies of {model!r} on {device} for machine {machine}")
    tol = max_rel_error
    if tol is None:
        tol = runs[-1]["max_rel_error"] if runs else _newest_tolerance(studies)
    first = studies[0].user_attrs
    logging.getLogger("optuna").setLevel(logging.ERROR)
    try:
        config: dict[str, Any] | None = build_config(storage, model, device, tol, machine)
    except UserError:
        config = None
    bench = latest_bench(url, model, machine)
    starts, ends = [], []
    for s in studies:
        for t in s.get_trials(deepcopy=False):
            starts += [t.datetime_start] if t.datetime_start else []
            ends += [t.datetime_complete] if t.datetime_complete else []
    return ReportInput(
        model=model, device=device, arch=BertArch(**first["arch"]),
        machine=first["machine_info"], software=first["software"], max_rel_error=tol,
        studies=tuple(read_study(s, tol) for s in sorted(
            studies, key=lambda s: (s.user_attrs["batch"], s.user_attrs["seq"],
                                    s.user_attrs["kind"]))),
        config=config, composition=_composition(storage, model, device, machine, tol),
        runs=runs, bench=tuple(bench[1]) if bench else (), bench_date=bench[0] if bench else None,
        peaks=peaks, generated=datetime.now(UTC),
        trial_span=(min(starts), max(ends)) if starts and ends else None)


def _newest_tolerance(studies: list[optuna.Study]) -> float:
    """The tolerance the newest re-measured winner was judged at (0.02 if none was)."""
    finals = [s.user_attrs["final"]["max_rel_error"] for s in studies  # storage order: oldest first
              if s.user_attrs.get("final")]
    return float(finals[-1]) if finals else 0.02


def models_in(storage: optuna.storages.BaseStorage, device: str) -> list[str]:
    return sorted({str(s.user_attrs["model"]) for s in storage.get_all_studies()
                   if s.user_attrs.get("autotune") and s.user_attrs.get("device") == device
                   and s.user_attrs.get("model")})


def study_summaries(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One row per study in the database (autotune's and any other), for ``autotune studies``."""
    out = []
    for fs in storage.get_all_studies():
        study = optuna.load_study(study_name=fs.study_name, storage=storage, sampler=_SAMPLER)
        trials = study.get_trials(deepcopy=False)
        a = fs.user_attrs
        final = a.get("final") or {}
        if a.get("compose"):
            op, best = "model-level", final.get("ms")
            ratio = final.get("ratio") or (  # studies stored before the geometric mean
                final["ms"] / final["anchor_ms"] if final.get("anchor_ms") else None)
        else:
            op, best = a.get("kind", "–"), final.get("cand_ms")
            ratio = final["cand_ms"] / final["ref_ms"] if final.get("ref_ms") else None
        done = [t.datetime_complete for t in trials if t.datetime_complete is not None]
        out.append({
            "name": fs.study_name, "model": a.get("model"), "op": op,
            "bucket": (f"b{a['batch']}s{a['seq']}" if "batch" in a
                       else "+".join(f"b{b}s{s}" for b, s in a.get("buckets", []))),
            "device": a.get("device"), "machine": a.get("machine"),
            "states": {st: sum(1 for t in trials if t.state == getattr(TrialState, st))
                       for st in ("COMPLETE", "FAIL", "PRUNED", "RUNNING")},
            "best_ms": best, "best_ratio": ratio, "max_rel_error": final.get("max_rel_error"),
            "updated": max(done) if done else None,
        })
    return out
