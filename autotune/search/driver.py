"""The study driver: one Optuna study per op instance, ask/tell, cache, worker, re-measure.

For each study: stale RUNNING trials of a killed run are failed, finished trials count toward
the budget, every proposal is checked against the space's constraints, looked up in the
measurement cache, and only then measured in the worker process. After the budget, the top
feasible configs are measured again with more repeats and the winner is stored on the study.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.cli_common import TRIAL_TIMEOUT_S
from autotune.errors import UserError
from autotune.measure import MeasureResult, MeasureTask, MeasureWorker
from autotune.measure.result import Status
from autotune.models.bert import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_SEQ_LEN,
    BertArch,
    Bucket,
    OpInstance,
    ResolvedModel,
    default_buckets,
    workload,
)
from autotune.models.kinds import KINDS, OP_KINDS, op_cost
from autotune.search.keys import StudyIdentity, config_key
from autotune.search.loop import LoopPolicy, run_trials, warm_configs
from autotune.search.samplers import (
    DEFAULT_EVOLVE_AFTER,
    DEFAULT_LOCAL_EVERY,
    DEFAULT_RECOMBINE_EVERY,
    make_sampler,
)
from autotune.search.spaces import load_spaces, space_context
from autotune.space import Params
from autotune.storage import MeasurementCache, open_optuna_storage, prepare_url
from autotune.storage.claims import Claims
from autotune.storage.liveness import Liveness, worker_id
from autotune.storage.results import (
    FINISHED,
    feasible,
    feasible_trials,
    params_key,
    ranked_configs,
    trial_counts,
)

COPIES_CAP = 8  # weight copies rotated per op: enough to defeat caches, bounded in memory
WARM_K = 3  # best configs taken from each neighbouring bucket's study
# The budget goes where the time goes: a study warm-started from its neighbouring buckets'
# best configs stops once this many new configs bring no new best (unless --patience says
# otherwise), and in the default workload an op kind with under 1% of its bucket's forward
# FLOPs (embeddings, pooler) gets at most 6 trials. A grid search runs every config.
WARM_PATIENCE = 8
CHEAP_SHARE = 0.01
CHEAP_TRIALS = 6


@dataclass
class SearchOptions:
    model: str = "bert-base-uncased"
    device: str = "cpu"
    ops: tuple[str, ...] = OP_KINDS
    batch_sizes: tuple[int, ...] = ()  # with seq_lens: their product; neither: the default
    seq_lens: tuple[int, ...] = ()  # buckets (models.bert.default_buckets)
    trials: int = 20
    timeout: float | None = None
    sampler: str = "tpe"
    seed: int | None = 0
    max_rel_error: float = 0.02
    storage: str = "sqlite:///db/autotune.sqlite3"
    spaces_dir: Path = Path("search_spaces")
    trial_timeout: float = TRIAL_TIMEOUT_S
    time_per_trial: float = 1.0
    top_k: int = 3
    compose_trials: int = 4  # model-level study after the per-op ones (0: none)
    warm_start: bool = True  # try other buckets' best configs of the same op kind early
    patience: int | None = None  # stop a study after this many configs without a new best
    local_every: int = DEFAULT_LOCAL_EVERY  # hill-climbing step every n-th new config
    recombine_every: int = DEFAULT_RECOMBINE_EVERY  # of those steps, every n-th recombines
    evolve_after: int = DEFAULT_EVOLVE_AFTER  # configs without a new best before steps evolve
    wait: bool = False  # SQLite: queue behind another search writing the file
    heartbeat: int | None = None  # shared databases: seconds between a trial's heartbeats
    lengths: str = "fixed"  # sequence-length mix the model-level study is timed on
    calibration: str | None = None  # texts it judges accuracy on (default: see compose)
    preload: tuple[str, ...] = ()  # extra variant modules for the worker (tests, plugins)

    @property
    def default_workload(self) -> bool:
        """Neither --batch-sizes nor --seq-lens given."""
        return not self.batch_sizes and not self.seq_lens

    def buckets(self, arch: BertArch) -> list[Bucket]:
        if self.default_workload:
            return default_buckets(arch)
        return [Bucket(b, s) for b in self.batch_sizes or DEFAULT_BATCH_SIZES
                for s in self.seq_lens or (min(DEFAULT_SEQ_LEN, arch.max_seq),)]


@dataclass
class StudyOutcome:
    identity: StudyIdentity
    instance: OpInstance
    final: dict[str, Any] | None
    counts: dict[str, int] = field(default_factory=dict)


Progress = Callable[[str, int], None]  # (description, trials finished since last call)


def check_spaces(opts: SearchOptions, resolved: ResolvedModel) -> None:
    """Fail before anything is written if a space leaves some op instance no legal config
    (its constraints exclude every one), rather than spending the budget on pruned trials."""
    spaces = load_spaces(opts.spaces_dir, opts.device, opts.ops)
    for inst in workload(resolved.arch, opts.buckets(resolved.arch)):
        if inst.kind in opts.ops and not any(True for _ in spaces[inst.kind].configs(
                space_context(inst.kind, resolved.arch, inst.bucket, opts.device))):
            raise UserError(f"{opts.spaces_dir / opts.device / inst.kind}.yaml: the "
                            f"constraints exclude every config for {inst.kind} "
                            f"{inst.bucket.label}")


def _time_shares(arch: BertArch, buckets: list[Bucket]) -> dict[tuple[str, Bucket], float]:
    """Each op kind's share of its bucket's forward FLOPs (calls x FLOPs per call)."""
    flops = {(i.kind, i.bucket): i.count * op_cost(i.kind, arch, i.bucket)[0]
             for i in workload(arch, buckets)}
    total = {b: sum(f for (_, bb), f in flops.items() if bb == b) for b in buckets}
    return {key: f / total[key[1]] for key, f in flops.items()}


def real_inputs(opts: SearchOptions, resolved: ResolvedModel, buckets: list[Bucket],
                ) -> tuple[str | None, tuple[tuple[int, ...], ...], str]:
    """(checkpoint directory, token ids of real texts, what they are) for the per-op gate
    of a model with weights and a tokenizer: the texts accuracy is judged on (``--calibration``,
    else ``--lengths`` when a text file, else the built-in ones), as many as fill the
    largest bucket. (None, (), "") without weights or tokenizer: synthetic inputs only."""
    from autotune.bench.lengths import calibration_texts, parse_lengths
    from autotune.runtime.weights import checkpoint_file

    file = None if resolved.path is None else checkpoint_file(resolved.path)
    if file is None:
        return None, (), ""
    top = resolved.arch.max_seq
    texts = calibration_texts(opts.calibration, resolved.path, top,
                              parse_lengths(opts.lengths, resolved.path, top))
    if texts is None or not any(len(t) for t in texts.texts):
        return None, (), ""
    rows = max(b.batch * b.seq for b in buckets)
    kept: list[tuple[int, ...]] = []
    while sum(len(t) for t in kept) < rows and len(kept) < len(texts.texts):
        kept.append(tuple(int(i) for i in texts.texts[len(kept)]))
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    digest.update(json.dumps(kept).encode())
    return str(resolved.path), tuple(kept), f"{file.name} {digest.hexdigest()[:16]}"


class Searcher:
    """Runs the studies of one ``autotune search`` invocation."""

    def __init__(self, opts: SearchOptions, resolved: ResolvedModel,
                 progress: Progress | None = None) -> None:
        self.opts = opts
        self.resolved = resolved
        self.progress = progress or (lambda desc, n: None)
        self.say: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)
        self.spaces = load_spaces(opts.spaces_dir, opts.device, opts.ops)
        self.buckets = opts.buckets(resolved.arch)
        self.instances = [i for i in workload(resolved.arch, self.buckets) if i.kind in opts.ops]
        self.share = _time_shares(resolved.arch, self.buckets)
        self.url = prepare_url(opts.storage)
        # Trials are reported by the progress bar and the summary, not by Optuna's log lines.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.storage = open_optuna_storage(self.url, opts.heartbeat)
        self.cache = MeasurementCache(self.url)
        self.worker = MeasureWorker(opts.preload)
        self.deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
        self.real_model, self.real_texts, self.accuracy = real_inputs(opts, resolved,
                                                                      self.buckets)
        self.stop_requested = False  # set by a signal handler: finish cleanly, soon

    def trials(self, kind: str, bucket: Bucket) -> int:
        """The trial budget of one study: ``--trials``, less for cheap op kinds in the
        default workload (see CHEAP_SHARE); buckets or a grid asked for get what they ask."""
        if self.opts.default_workload and self.opts.sampler != "grid" \
                and self.share.get((kind, bucket), 1.0) < CHEAP_SHARE:
            return min(self.opts.trials, CHEAP_TRIALS)
        return self.opts.trials

    def identity(self, inst: OpInstance) -> StudyIdentity:
        return StudyIdentity(self.resolved.name, self.resolved.arch, inst.kind, inst.bucket,
                             self.opts.device, inst.dtype,
                             self.accuracy if KINDS[inst.kind].per_layer else "")

    def out_of_time(self) -> bool:
        return self.stop_requested or (
            self.deadline is not None and time.monotonic() > self.deadline)

    def request_stop(self) -> None:
        """Stop after the trial in flight (which is cut short and recorded as failed)."""
        self.stop_requested = True

    def close(self) -> None:
        self.worker.close()
        self.cache.close()

    # -- one study -------------------------------------------------------------------------

    def open_study(self, ident: StudyIdentity) -> optuna.Study:
        sampler = make_sampler(self.opts.sampler, self.opts.seed, self.trials(ident.kind,
                                                                              ident.bucket))
        study = optuna.create_study(study_name=ident.name, storage=self.storage,
                                    direction="minimize", sampler=sampler, load_if_exists=True)
        if study.user_attrs.get("key") != ident.key:
            for k, v in ident.attrs().items():
                study.set_user_attr(k, v)
        # SQLite has one writer, so a RUNNING trial here was left by a killed run.
        if self.url.startswith("sqlite"):
            study_id = self.storage.get_study_id_from_name(study.study_name)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                                t.number)
                self.storage.set_trial_user_attr(trial_id, "reason", "stale: run was killed")
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        return study

    def task(self, inst: OpInstance, params: Params, budget: float) -> MeasureTask:
        return MeasureTask(
            arch=self.resolved.arch.to_dict(), kind=inst.kind, batch=inst.bucket.batch,
            seq=inst.bucket.seq, variant=str(params["variant"]), params=dict(params),
            device=self.opts.device, copies=min(inst.count, COPIES_CAP), budget_s=budget,
            seed=self.opts.seed or 0,
            real_model=self.real_model if KINDS[inst.kind].per_layer else None,
            real_texts=self.real_texts if KINDS[inst.kind].per_layer else (),
        )

    def warm_start(self, inst: OpInstance) -> list[Params]:
        """The best configs of this op kind in the other buckets already searched."""
        if not self.opts.warm_start:
            return []
        rankings = []
        for other in self.instances:
            if other.kind != inst.kind or other.bucket == inst.bucket:
                continue
            try:
                study = optuna.load_study(study_name=self.identity(other).name,
                                          storage=self.storage)
            except KeyError:  # not searched yet
                continue
            rankings.append(ranked_configs(study, self.opts.max_rel_error, WARM_K))
        return warm_configs(rankings, WARM_K)

    def run_study(self, inst: OpInstance) -> StudyOutcome:
        """Run the trial loop (``loop.run_trials``) of one study, measuring each new config
        in the worker unless the cache has it, then re-measure the best."""
        ident = self.identity(inst)
        space = self.spaces[inst.kind]
        ctx = space_context(inst.kind, self.resolved.arch, inst.bucket, self.opts.device)
        study = self.open_study(ident)
        desc = f"{inst.kind} {inst.bucket.label}"
        done = {params_key(t.params) for t in study.get_trials(deepcopy=False)
                if t.state in FINISHED}
        trials = self.trials(inst.kind, inst.bucket)
        self.progress(desc, min(len(done), trials))

        # Workers sharing a database split the budget through claims (see storage.claims).
        claims = None if self.url.startswith("sqlite") else Claims(
            self.url, ident.key, trials, worker_id())
        live = Liveness(study, self.storage)

        def measure(params: Params, trial: optuna.Trial) -> tuple[MeasureResult, bool] | str:
            key = config_key(ident.key, params)
            res = self.cache.get(key)
            if res is not None:
                return res, True
            if claims is not None:
                # marked before claiming, so a claim is never left without a trial to release
                # it (the trial's worker is marked when its heartbeat starts, see liveness)
                trial.set_user_attr("config_key", key)
                got = claims.claim(key)
                if got is None:
                    return "shared budget spent"
                if not got:
                    return "in flight in another worker"
            res = self.worker.run(self.task(inst, params, self.opts.time_per_trial),
                                  self.opts.trial_timeout, lambda: self.stop_requested)
            if res.status != Status.INTERRUPTED:  # not a property of the config: not cached
                self.cache.put(key, ident.key, params, res)
            elif claims is not None:
                claims.release(key)
            return res, False

        # Another worker's trial lasts at most a measurement (with a worker restart) unless
        # that worker hangs; a dead one is found within the grace period.
        wait_limit = 2 * self.opts.trial_timeout + 4 * live.grace + 60
        warm = self.warm_start(inst)
        patience = self.opts.patience or (
            WARM_PATIENCE if warm and self.opts.sampler != "grid" else None)
        policy = LoopPolicy(trials, self.opts.sampler, self.opts.seed,
                            self.opts.max_rel_error, warm, patience,
                            self.opts.local_every, wait_limit,
                            recombine_every=self.opts.recombine_every,
                            evolve_after=self.opts.evolve_after)
        try:
            run_trials(study, space, ctx, policy, measure, self.out_of_time,
                       lambda: self.progress(desc, 1),
                       None if claims is None else lambda: claims.left(study),
                       None if claims is None else live, self.say)
        finally:
            if claims is not None:
                claims.close()
        final = None if self.stop_requested else self.remeasure(study, inst)
        return StudyOutcome(ident, inst, final, trial_counts(study, self.opts.max_rel_error))

    def remeasure(self, study: optuna.Study, inst: OpInstance) -> dict[str, Any] | None:
        """Measure the top feasible configs again with 3× the time and keep the best: the
        winner of a noisy search is biased toward a lucky measurement."""
        tol = self.opts.max_rel_error
        top = feasible_trials(study, tol)[: self.opts.top_k]
        if not top:
            return None
        numbers = [t.number for t in top]
        old = study.user_attrs.get("final")
        if old and old.get("trials") == numbers and old.get("max_rel_error") == tol:
            return dict(old)
        candidates = []
        for t in top:
            res = self.worker.run(self.task(inst, t.params, 3 * self.opts.time_per_trial),
                                  self.opts.trial_timeout, lambda: self.stop_requested)
            if feasible(res.to_dict(), tol) and res.ratio is not None:
                candidates.append({"trial": t.number, "params": t.params, **res.to_dict()})
        if not candidates:  # remeasurement disagreed with the search: fall back to its best
            t = top[0]
            candidates = [{"trial": t.number, "params": t.params, **t.user_attrs}]
        best = min(candidates, key=lambda c: c["cand_ms"] / c["ref_ms"])
        slower = best["cand_ms"] > best["ref_ms"]
        if slower:  # never ship what re-measured slower than the reference: ship its config
            base = self.spaces[inst.kind].baseline
            remeasured = next((c for c in candidates
                               if base is not None and params_key(c["params"]) == params_key(base)),
                              None)
            best = remeasured or self.reference_config(study, inst) or best
        final = {"trials": numbers, "max_rel_error": tol, "remeasured": len(candidates),
                 **({"slower_than_reference": True} if slower else {}),
                 **{k: best.get(k) for k in ("trial", "params", "rel_error", "cand_ms",
                                             "cand_iqr_ms", "ref_ms", "ref_iqr_ms")}}
        study.set_user_attr("final", final)
        return final

    def reference_config(self, study: optuna.Study, inst: OpInstance) -> dict[str, Any] | None:
        """The space's baseline (the reference's own config), measured like a candidate."""
        space = self.spaces[inst.kind]
        ctx = space_context(inst.kind, self.resolved.arch, inst.bucket, self.opts.device)
        if space.baseline is None or space.violated(space.baseline, ctx) is not None:
            return None
        res = self.worker.run(self.task(inst, space.baseline, 3 * self.opts.time_per_trial),
                              self.opts.trial_timeout, lambda: self.stop_requested)
        if not feasible(res.to_dict(), self.opts.max_rel_error):
            return None
        trial = next((t.number for t in study.get_trials(deepcopy=False)
                      if params_key(t.params) == params_key(space.baseline)), None)
        return {"trial": trial, "params": dict(space.baseline), **res.to_dict()}

    def compose(self, outcomes: list[StudyOutcome], say: Callable[[str], None],
                ) -> dict[str, Any] | None:
        """The model-level study over the per-op studies' top configs (see ``compose``)."""
        from autotune.search.compose import Composer, load_state, run_composition

        tol = self.opts.max_rel_error
        candidates: dict[str, dict[Bucket, list[dict[str, Any]]]] = {}
        for o in outcomes:
            study = optuna.load_study(study_name=o.identity.name, storage=self.storage)
            ranked = ranked_configs(study, tol, self.opts.top_k)
            if not ranked:
                say(f"no model-level study: {o.instance.kind} {o.instance.bucket.label} has "
                    "no feasible config")
                return None
            candidates.setdefault(o.instance.kind, {})[o.instance.bucket] = ranked
        state, source = load_state(self.resolved)
        composer = Composer(self.resolved, state, candidates, self.buckets,
                            self.opts.lengths, tol, self.opts.device,
                            seconds=2 * self.opts.time_per_trial,
                            calibration=self.opts.calibration)
        say(f"model-level study: {self.opts.compose_trials} compositions on {source}, "
            f"timed on lengths {composer.lengths_desc}, accuracy judged on "
            f"{composer.accuracy_desc}")
        return run_composition(self.storage, composer, self.opts.compose_trials,
                               self.opts.seed, say)

