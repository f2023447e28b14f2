"""The trial loop of one study: what is tried first, how proposals become measurements, when
to stop. Live search measures in a worker process; replay looks results up in a recording;
both run this same loop, so what replay shows about the search is true of the search.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autotune.measure import MeasureResult
from autotune.measure.result import Status
from autotune.search.objective import suggest
from autotune.space import Params, Space, Value
from autotune.storage.liveness import WORKER, Liveness, marked
from autotune.storage.results import FINISHED, feasible, params_key

#: What measuring one config gives: its result and whether it came from a cache; or, from a
#: worker sharing the study, the reason it was not measured here (the trial is PRUNED).
Measure = Callable[[Params, optuna.Trial], "tuple[MeasureResult, bool] | str"]

IMPROVEMENT = 0.005  # a new best must beat the old one by 0.5% to reset --patience
RECOMBINE_PARENTS = 5  # a recombination step crosses two of this many best configs
POPULATION = 26  # an evolution step breeds from this many best configs (Kernel Tuner's GA size)
MUTATION = 0.1  # chance that an evolution step's child moves one step further
PREDICT_EVERY = 2  # once stalled, every second step is the surrogate's pick (the others evolve)
SCREENED = 8  # the surrogate picks the fastest-predicted of this many evolution children
RIDGE = 1.0  # the surrogate's regularisation (in units of its kernel, which is >= 1)
FAILED_PENALTY = 0.5  # a failed or infeasible config counts as the worst log time plus this


@dataclass(frozen=True)
class LoopPolicy:
    trials: int  # distinct configs with a result (repeats answered by the cache don't count)
    sampler: str
    seed: int | None
    tol: float
    warm: Sequence[Params] = field(default_factory=tuple)  # tried right after the baseline
    patience: int | None = None  # stop after this many distinct configs without a new best
    local_every: int = 0  # > 0: every n-th new config is a hill-climbing step (0: off)
    wait_limit_s: float = 600.0  # shared studies: give up waiting on others' trials after this
    recombine_every: int = 0  # > 0: every n-th step first tries a recombination (0: off)
    evolve_after: int = 0  # > 0: after this many configs without a new best, evolve (0: off)


def tell(study: optuna.Study, trial: optuna.Trial, res: MeasureResult, tol: float,
         cached: bool) -> None:
    """Store a result on its trial: feasible or not is the trial's constraint, failures FAIL.
    ``status`` is written last: a trial whose worker dies in here either has the whole result
    or none of it (readers take ``status`` as "this trial has a result")."""
    trial.set_user_attr("cached", cached)
    attrs = {k: v for k, v in res.to_dict().items() if k != "extra" and v is not None}
    attrs |= {k: v for k, v in res.extra.items() if k.startswith("rel_error_")}  # real, synthetic
    for k, v in sorted(attrs.items(), key=lambda kv: kv[0] == "status"):
        trial.set_user_attr(k, v)
    if res.status == Status.OK and res.ratio is not None and res.rel_error is not None:
        trial.set_constraint("rel_error", res.rel_error - tol)
        study.tell(trial, res.ratio)
    else:
        study.tell(trial, state=TrialState.FAIL)


def _enqueue_first(study: optuna.Study, space: Space, policy: LoopPolicy, pool: Pool,
                   seen: set[str], remaining: int) -> None:
    """A fresh study starts from the reference's own config, so that even an interrupted
    search never ends worse than the baseline. Then, for grid search (or a space no larger than
    the budget), every other config in a seeded random order; otherwise the warm-start configs
    that are legal here."""
    waiting = {params_key(t.params)
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    first = [space.baseline] if space.baseline is not None and not seen else []
    configs, legal = pool.configs, pool.row
    if policy.sampler == "grid" or len(configs) <= remaining:
        for params in [*(c for c in first if params_key(c) in legal), *configs]:
            key = params_key(params)
            if remaining > 0 and key not in seen | waiting:
                study.enqueue_trial(params)
                waiting.add(key)
                remaining -= 1
        return
    for params in [*first, *policy.warm]:
        key = params_key(params)
        if key in legal and key not in seen | waiting:
            study.enqueue_trial(params)
            waiting.add(key)


def _tier(space: Space, params: Params) -> tuple[str, str]:
    """A config's precision and the variant computing in it: int8 per tensor and per token
    are two tiers, one may hold the tolerance on real activations where the other does not."""
    from autotune.ops.registry import precision_of

    return precision_of(space.kind, space.device, params), str(params.get("variant"))


def tier_seeds(space: Space, configs: list[Params]) -> list[Params]:
    """For each (precision, variant) the space can run besides its baseline's, the legal
    config nearest the baseline in it (none for kinds without registered variants). The
    model-level study steps ops back one precision at a time (bfloat16 before float32), or
    within one to a config with half the error, so a study's last trials go to the tiers it
    has no feasible config of yet: a study whose
    trials all went to one int8 scheme (real MiniLM: per tensor, over the bound in ffn_up)
    still measures the other."""
    baseline = space.baseline or {}
    try:
        base = _tier(space, baseline)
    except KeyError:
        return []
    nearest: dict[tuple[str, str], tuple[int, Params]] = {}
    for c in configs:
        tier, d = _tier(space, c), distance(c, baseline)
        if tier != base and (tier not in nearest or d < nearest[tier][0]):
            nearest[tier] = (d, c)
    return [c for _, c in nearest.values()]


def _missing_tiers(study: optuna.Study, space: Space, tiers: list[Params], tol: float,
                   seen: set[str]) -> list[Params]:
    """The tier configs whose tier has no feasible trial yet (and not tried)."""
    have = {_tier(space, t.params) for t in _ranked(study, tol)}
    return [c for c in tiers if _tier(space, c) not in have and params_key(c) not in seen]


def run_trials(study: optuna.Study, space: Space, ctx: dict[str, Any], policy: LoopPolicy,
               measure: Measure, stop: Callable[[], bool] = lambda: False,
               on_new: Callable[[], None] = lambda: None,
               budget_left: Callable[[], int] | None = None, live: Liveness | None = None,
               say: Callable[[str], None] = lambda msg: None) -> None:
    """Run trials until ``policy.trials`` distinct configs have a result in ``study``.

    A proposal the study has already seen is answered from the cache (no measurement, not
    counted) and an unseen config is queued next, so a sampler stuck on one noisy favourite
    cannot spend the budget on repeats. A proposal that breaks a constraint is PRUNED, not
    measured and not counted.

    Workers sharing the study pass ``budget_left`` (the study's free claims) and ``live``:
    the budget is then the study's, not this worker's, and a worker whose budget is spent
    waits while trials of other workers still run, since a dead worker's trial is failed
    (``live.fail_dead``) and comes back to be retried. The wait is bounded: with no trial
    finishing for ``policy.wait_limit_s`` the worker says so and gives up on the study.
    """
    seen = {params_key(t.params) for t in study.get_trials(deepcopy=False)
            if t.state in FINISHED}
    remaining = max(0, policy.trials - len(seen))
    configs = list(space.configs(ctx))
    random.Random(policy.seed).shuffle(configs)
    pool = Pool(configs)
    model = Surrogate(pool)
    if remaining:
        _enqueue_first(study, space, policy, pool, seen, remaining)
    # queued for the budget's last trials (or when patience runs out) if still needed
    tiers = tier_seeds(space, configs)
    finishing: int | None = None
    best, since_best = _best_feasible(study, policy.tol), 0
    asks, new = 0, 0
    rng = random.Random(policy.seed)
    local_every = 0 if policy.sampler == "grid" else policy.local_every
    waiter = _Waiter(policy.wait_limit_s, say)
    spent: set[str] = set()  # configs whose neighbours are all seen (see _local_step)
    stalled_steps = 0
    while asks < 5 * policy.trials + 20 and not stop():
        if budget_left is not None:
            if live is not None:
                live.fail_dead()  # a dead worker's trial: failed, released, queued again
            seen |= {params_key(t.params) for t in study.get_trials(deepcopy=False)
                     if t.state in FINISHED}
            if budget_left() <= 0 and not _waiting(study):
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if not running or not waiter.wait(running, study.study_name):
                    break
                time.sleep(1.0)
                continue
        elif remaining <= 0:
            break
        left = remaining if budget_left is None else budget_left()
        if tiers and left <= len(tiers) and not _waiting(study):
            for params in _missing_tiers(study, space, tiers, policy.tol, seen)[:left]:
                study.enqueue_trial(params)
            tiers = []
        asks += 1
        if local_every and new % local_every == local_every - 1 \
                and not _waiting(study):
            step = None
            if policy.evolve_after and since_best >= policy.evolve_after:
                stalled_steps += 1
                if stalled_steps % PREDICT_EVERY == 0:
                    step = _screened(study, pool, seen, policy.tol, rng, model)
                if step is None:
                    step = _evolve(study, pool, seen, policy.tol, rng)
            every = policy.recombine_every
            if step is None and every and new % every == 1 % every:  # 2nd of every n
                step = _recombine(study, pool, seen, policy.tol, rng)
            if step is None:
                step = _local_step(study, pool, seen, policy.tol, rng, spent)
            if step is not None:
                study.enqueue_trial(step)
        trial = study.ask()
        beating: AbstractContextManager[bool] = \
            nullcontext(True) if live is None else live.running(trial)
        with beating as alive:
            if not alive:  # failed by another worker while this one stalled: retried there
                continue
            params = suggest(trial, space)
            broken = space.violated(params, ctx)
            if broken is not None:
                trial.set_user_attr("reason", f"constraint: {broken}")
                study.tell(trial, state=TrialState.PRUNED)
                continue
            got = measure(params, trial)
            if isinstance(got, str):  # another worker has it, or the shared budget is spent
                trial.set_user_attr("reason", got)
                study.tell(trial, state=TrialState.PRUNED)
                continue
            res, cached = got
            try:
                tell(study, trial, res, policy.tol, cached)
            except UpdateFinishedTrialError:
                # This worker stalled past the grace period while measuring and another one
                # failed the trial as dead (an interrupted run stops at the loop's test).
                say(f"{study.study_name}: trial #{trial.number} was failed as stale by "
                    "another worker while it was measured (this worker stalled); its retry "
                    "is answered from the cache")
                continue
        if res.status == Status.INTERRUPTED:  # not a property of the config
            break
        key = params_key(params)
        if key in seen:
            nxt = next((c for k, c in zip(pool.keys, pool.configs, strict=True)
                        if k not in seen), None)
            if nxt is None:
                break  # every config of the space has a result
            study.enqueue_trial(nxt)
            continue
        seen.add(key)
        remaining -= 1
        new += 1
        on_new()
        if feasible(res.to_dict(), policy.tol) and res.ratio is not None \
                and res.ratio < best * (1 - IMPROVEMENT):
            best, since_best = res.ratio, 0
        else:
            since_best += 1
        if finishing is not None:  # measuring the precisions still missing, then done
            finishing -= 1
            if finishing <= 0:
                break
        elif policy.patience is not None and since_best >= policy.patience:
            # out of patience: the precisions still missing get the trials it leaves
            left = remaining if budget_left is None else budget_left()
            missing = _missing_tiers(study, space, tiers, policy.tol, seen)[:max(0, left)]
            if not missing:
                break
            for params in missing:
                study.enqueue_trial(params)
            tiers, finishing = [], len(missing)


class _Waiter:
    """Bounded, visible waiting on other workers' trials: says which trials it waits on
    whenever that set changes, and gives up after ``limit_s`` without any of them finishing."""

    def __init__(self, limit_s: float, say: Callable[[str], None]) -> None:
        self.limit_s, self.say = limit_s, say
        self.numbers: frozenset[int] = frozenset()
        self.since = time.monotonic()

    def wait(self, running: Sequence[FrozenTrial], study_name: str) -> bool:
        """False: waited too long, give up."""
        numbers = frozenset(t.number for t in running)
        now = time.monotonic()
        if numbers != self.numbers:  # a trial finished or started: the study moves
            self.numbers, self.since = numbers, now
            self.say(f"waiting on other workers' trials of {study_name}: {_describe(running)}")
        elif numbers and now - self.since > self.limit_s:
            self.say(f"gave up on {study_name} after {now - self.since:.0f} s waiting on "
                     f"{_describe(running)}: they neither finish nor miss heartbeats (a hung "
                     "worker?); its budget may be short of results; a later run resumes it")
            return False
        return True


def _describe(running: Sequence[FrozenTrial]) -> str:
    return ", ".join(
        f"#{t.number} ({t.user_attrs[WORKER] if marked(t) else 'no heartbeat yet'}, since "
        f"{t.datetime_start:%H:%M:%S})" if t.datetime_start else f"#{t.number}"
        for t in sorted(running, key=lambda t: t.number))


def _best_feasible(study: optuna.Study, tol: float) -> float:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None and feasible(t.user_attrs, tol)]
    return min(values, default=float("inf"))


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def distance(a: Params, b: Params) -> int:
    """Parameters set differently in both configs (one only config has: not counted), so
    switching the variant while keeping the shared parameters is one step."""
    return sum(1 for k in a.keys() & b.keys() if a[k] != b[k])


def _ranked(study: optuna.Study, tol: float) -> list[FrozenTrial]:
    """Feasible finished trials, fastest first."""
    return sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if t.value is not None and feasible(t.user_attrs, tol)),
                  key=lambda t: t.value or 0.0)


class Pool:
    """A space's legal configs (in the loop's seeded order), indexed for the scans the steps
    below make over all of them: which configs are one parameter away from a given one, which
    are made of two parents' values. Each parameter's values are coded as small integers in
    one column per parameter, so a scan is a few numpy comparisons: on a Kernel Tuner space
    of 54,000 configs, comparing dicts made one replay of 600 trials take 12 minutes."""

    ABSENT, UNKNOWN = -1, -2  # a parameter the config does not have; a value no config has

    def __init__(self, configs: Sequence[Params]) -> None:
        self.configs = list(configs)
        self.keys = [params_key(c) for c in self.configs]
        self.row = {k: i for i, k in enumerate(self.keys)}
        self.names = sorted({k for c in self.configs for k in c})
        self.values: list[dict[Value, int]] = [{} for _ in self.names]
        self.codes = np.full((len(self.configs), len(self.names)), self.ABSENT, dtype=np.int32)
        for j, (name, vocab) in enumerate(zip(self.names, self.values, strict=True)):
            column = self.codes[:, j]
            for i, c in enumerate(self.configs):
                if name in c:
                    column[i] = vocab.setdefault(c[name], len(vocab))

    def get(self, key: str) -> Params | None:
        i = self.row.get(key)
        return None if i is None else self.configs[i]

    def _code(self, config: Params) -> np.ndarray:
        return np.array([self.ABSENT if n not in config else v.get(config[n], self.UNKNOWN)
                         for n, v in zip(self.names, self.values, strict=True)], dtype=np.int32)

    def unseen(self, seen: set[str]) -> np.ndarray:
        mask = np.ones(len(self.configs), dtype=bool)
        mask[[i for k in seen if (i := self.row.get(k)) is not None]] = False
        return mask

    def at_distance_one(self, center: Params) -> np.ndarray:
        """Configs one parameter away from ``center`` (as ``distance`` counts)."""
        code = self._code(center)
        differ = (self.codes != code) & (self.codes != self.ABSENT) & (code != self.ABSENT)
        return differ.sum(axis=1) == 1

    def made_of(self, a: Params, b: Params) -> np.ndarray:
        """Configs with every parameter set as in ``a`` or as in ``b`` (children of the two)."""
        ca, cb = self._code(a), self._code(b)
        return ((self.codes == ca) | (self.codes == cb) | (self.codes == self.ABSENT)).all(axis=1)

    def pick(self, mask: np.ndarray, rng: random.Random) -> Params | None:
        """One of the configs in ``mask``, drawn as ``rng.choice`` draws from a list."""
        rows = np.flatnonzero(mask)
        return self.configs[rng.choice(rows.tolist())] if rows.size else None


def _recombine(study: optuna.Study, pool: Pool, seen: set[str], tol: float,
               rng: random.Random, parents: int = RECOMBINE_PARENTS) -> Params | None:
    """An unseen config that takes every parameter from one of two of the ``parents`` best
    feasible configs (a uniform crossover), the best-ranked pair that still has one. It
    reaches what a one-parameter step cannot: two parameters that only pay together (on
    attn_out the fused epilogue wins only with the residual in the epilogue; each alone is
    slower than neither), or a value of one good config's that suits another's."""
    top = [t.params for t in _ranked(study, tol)[:parents]]
    pairs = sorted(((i, j) for i in range(len(top)) for j in range(i + 1, len(top))),
                   key=lambda ij: (ij[0] + ij[1], ij[0]))
    unseen = pool.unseen(seen)
    for i, j in pairs:
        child = pool.pick(unseen & pool.made_of(top[i], top[j]), rng)
        if child is not None:
            return child
    return None


def _evolve(study: optuna.Study, pool: Pool, seen: set[str], tol: float, rng: random.Random,
            population: int = POPULATION, tries: int = 30) -> Params | None:
    """An unseen child of two of the ``population`` best feasible configs, bred as a genetic
    algorithm does: parents drawn with a preference for rank (Beta(1, 2.5) over the ranking),
    each parameter from either parent, and with chance ``MUTATION`` one step further. A climb
    stuck in a local optimum (every one-parameter change slower, the better configs several
    changes away) gets out this way: on Kernel Tuner's A100 convolution file the climb alone
    spent a median 211 configs more than 30% above the best (200 seeds; RESULTS.md); a child
    of two of the best configs found so far changes several parameters at once, and the
    climb resumes from it when it is a new best."""
    top = [t.params for t in _ranked(study, tol)[:population]]
    if len(top) < 2:
        return None

    def rank() -> int:
        return int(rng.betavariate(1.0, 2.5) * len(top))
    for _ in range(tries):
        i = rank()
        j = next(j for j in iter(rank, None) if j != i)
        a, b = top[i], top[j]
        if a.keys() == b.keys():
            child = pool.get(params_key({k: a[k] if rng.random() < 0.5 else b[k] for k in a}))
        else:  # different variants: any legal config made of the two's values
            child = pool.pick(pool.made_of(a, b), rng)
        if child is None:
            continue
        if rng.random() < MUTATION:
            child = pool.pick(pool.at_distance_one(child), rng) or child
        if params_key(child) not in seen:
            return child
    return None


class Surrogate:
    """Predicts the log time of candidate configs of a pool from the configs measured so far,
    to pick the one it expects to be fastest (see ``_screened``).

    Kernel ridge regression whose kernel counts what two configs share: 1 + m + m(m-1)/2 for
    m parameters set alike, the inner product of their one-hot values and one-hot pairs of
    values. It learns which values and which pairs of values are fast, and pairs are what the
    climb and the crossover miss: on Kernel Tuner's A100 convolution file the best config is
    three parameters away from a wide plateau of configs 1.5x slower (tile sizes together with
    read-only loads), which a climb explores for hundreds of configs; a model of single values
    alone ranks the best config 546th of 4,201 even when fitted on all of them, one with pairs
    26th. Its argmin over the whole space is pure exploitation (RESULTS.md: alone, it misses
    1% of A4000's best in half the seeds), so it only screens evolution's children.

    A prediction compares the codes of the n measured configs with each other and with the
    candidates' (numpy, on the pool's integer codes) and solves one n x n system: its cost
    does not grow with the space."""

    def __init__(self, pool: Pool, ridge: float = RIDGE) -> None:
        self.pool, self.ridge = pool, ridge
        varied = [j for j in range(pool.codes.shape[1]) if np.unique(pool.codes[:, j]).size > 1]
        self.codes = pool.codes[:, varied]
        self.values: dict[int, float] = {}  # pool row -> log time (NaN: failed or infeasible)
        self.read: set[int] = set()  # trial numbers already taken in

    def _observe(self, study: optuna.Study, tol: float) -> None:
        for t in study.get_trials(deepcopy=False, states=FINISHED):
            status = t.user_attrs.get("status")
            if t.number in self.read or status is None or status == Status.INTERRUPTED:
                continue  # no result (yet): a dead worker's trial is retried
            self.read.add(t.number)
            row = self.pool.row.get(params_key(t.params))
            if row is None or row in self.values:
                continue
            ok = t.value is not None and t.value > 0 and feasible(t.user_attrs, tol)
            self.values[row] = math.log(t.value) if ok and t.value is not None else math.nan

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """k(u, v) for the pool rows ``a`` x ``b``."""
        m = (self.codes[a][:, None, :] == self.codes[b][None, :, :]).sum(axis=2)
        return 1 + m + m * (m - 1) / 2

    def fastest(self, study: optuna.Study, tol: float, among: np.ndarray) -> Params | None:
        """The config of ``among`` (a mask over the pool) predicted fastest; None before 10
        results or a feasible one."""
        self._observe(study, tol)
        rows = np.array(list(self.values))
        y = np.array(list(self.values.values()))
        ok = ~np.isnan(y)
        candidates = np.flatnonzero(among)
        if len(y) < 10 or not ok.any() or not candidates.size:
            return None
        y[~ok] = y[ok].max() + FAILED_PENALTY
        y -= y.mean()
        gram = self._kernel(rows, rows).astype(np.float64)
        alpha = np.linalg.solve(gram + self.ridge * np.eye(len(y)), y)
        predicted = self._kernel(candidates, rows) @ alpha
        return self.pool.configs[int(candidates[np.argmin(predicted)])]


def _screened(study: optuna.Study, pool: Pool, seen: set[str], tol: float, rng: random.Random,
              model: Surrogate) -> Params | None:
    """Of ``SCREENED`` evolution children, the one the surrogate predicts fastest: the
    children keep the search among recombinations of good configs (its argmin over the whole
    space alone chases the model's blind spots: on A4000 it missed 1% of the best in half the
    seeds), the model picks the child whose values and pairs of values have been fast."""
    among = np.zeros(len(pool.configs), dtype=bool)
    for _ in range(SCREENED):
        child = _evolve(study, pool, seen, tol, rng)
        if child is not None:
            among[pool.row[params_key(child)]] = True
    return model.fastest(study, tol, among)


def _local_step(study: optuna.Study, pool: Pool, seen: set[str], tol: float,
                rng: random.Random, spent: set[str]) -> Params | None:
    """An unseen config one step from the best feasible config whose neighbours are not all
    seen yet (best-first hill climbing): on these spaces most parameters act nearly
    independently, so good configs' neighbours are where the next improvement usually is, and
    when the best one's are spent, the runner-up's may hold a better config that needs two
    steps from the best (e.g. two block sizes changed together). The parameter to change is
    drawn first, then its value: drawing among neighbours directly would mostly vary the
    parameters with many values (row blocks, the other variant's settings). ``spent`` holds
    the centers whose neighbours are all seen (kept by the caller: seen configs stay seen)."""
    unseen = pool.unseen(seen)
    for t in _ranked(study, tol):
        center = t.params
        if params_key(center) in spent:
            continue
        by_param: dict[str, list[Params]] = {}
        for i in np.flatnonzero(unseen & pool.at_distance_one(center)).tolist():
            c = pool.configs[i]
            by_param.setdefault(_changed(c, center), []).append(c)
        if by_param:
            return rng.choice(by_param[rng.choice(sorted(by_param))])
        spent.add(params_key(center))
    return None


def _changed(config: Params, center: Params) -> str:
    if config.get("variant") != center.get("variant"):
        return "variant"
    return next(k for k in config.keys() & center.keys() if config[k] != center[k])


def warm_configs(rankings: Sequence[Sequence[dict[str, Any]]], k: int = 3) -> list[Params]:
    """The best ``k`` configs of each neighbouring study (ranked feasible configs), merged."""
    out: list[Params] = []
    seen: set[str] = set()
    for ranked in rankings:
        for r in ranked[:k]:
            if params_key(r["params"]) not in seen:
                seen.add(params_key(r["params"]))
                out.append(dict(r["params"]))
    return out
