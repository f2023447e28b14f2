"""The search end to end on a tiny BERT: studies, failures as data, resume, cache, export."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import optuna
import pytest
from rich.console import Console
from sqlalchemy import create_engine, text

import tests.faulty_variants  # noqa: F401  (registers test_* variants in this process)
from autotune.cli import run_search
from autotune.export import build_config, schema
from autotune.measure import MeasureResult, Status
from autotune.models.bert import Bucket
from autotune.search.driver import WARM_K, SearchOptions
from autotune.search.spaces import load_spaces, space_context
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.storage import open_optuna_storage
from autotune.storage.results import FINISHED, params_key, ranked_configs
from tests.conftest import TINY

PRELOAD = ("tests.faulty_variants",)


def _opts(tmp_path: Path, model_dir: Path, **kw: object) -> SearchOptions:
    base = dict(model=str(model_dir), batch_sizes=(2,), seq_lens=(8,), trials=3,
                time_per_trial=0.01, storage=f"sqlite:///{tmp_path / 'at.sqlite3'}",
                spaces_dir=DEFAULT_SPACES_DIR, trial_timeout=60.0, ops=("pooler", "ffn_up"))
    base.update(kw)
    return SearchOptions(**base)  # type: ignore[arg-type]


def _run(opts: SearchOptions, out: Path) -> str:
    buf = io.StringIO()
    code = run_search(opts, out, Console(file=buf, width=200), preload=PRELOAD)
    assert code == 0, buf.getvalue()
    return buf.getvalue()


def _studies(opts: SearchOptions) -> list[optuna.Study]:
    storage = open_optuna_storage(opts.storage)
    return [optuna.load_study(study_name=s.study_name, storage=storage)
            for s in storage.get_all_studies()]


def _measured(opts: SearchOptions) -> int:
    with create_engine(opts.storage).connect() as c:
        return int(c.execute(text("select count(*) from autotune_measurements_v1")).scalar_one())


def _distinct(study: optuna.Study) -> set[str]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return {json.dumps(t.params, sort_keys=True) for t in study.trials if t.state in states}


def _small_space(root: Path, variants: str, extra: str = "") -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "pooler.yaml").write_text(
        "kind: pooler\nparams:\n"
        f"  variant: {{type: categorical, choices: [{variants}]}}\n"
        "  precision: {type: categorical, choices: [float32" + extra + "], "
        "when: {variant: dense}}\n"
        "  impl: {type: categorical, choices: [aten, aten_t], when: {variant: dense}}\n"
        "  threads: {type: int, low: 1, high: 1}\n")
    return root


def test_search_stores_trials_and_exports_valid_config(tmp_path: Path,
                                                       tiny_model_dir: Path) -> None:
    opts = _opts(tmp_path, tiny_model_dir, batch_sizes=(1, 2))
    out = tmp_path / "tuned.json"
    log = _run(opts, out)
    studies = _studies(opts)
    assert len(studies) == 4  # 2 kinds × 2 buckets
    for s in studies:
        assert len(_distinct(s)) == 3
        assert s.user_attrs["final"]["ref_ms"] > 0
        assert s.user_attrs["model"] == "tiny-bert"
        # the baseline (the reference's own config) is measured first
        assert s.trials[0].params["precision"] == "float32"
        assert s.trials[0].params["impl"] == "aten"
    config = json.loads(out.read_text())
    jsonschema.validate(config, schema())
    assert set(config["ops"]) == {"ffn_up", "pooler"}
    assert [c["bucket"]["batch"] for c in config["ops"]["pooler"]] == [1, 2]
    assert "per-operator results" in log and "pooler" in log


def test_resume_counts_finished_trials_and_never_remeasures(tmp_path: Path,
                                                            tiny_model_dir: Path) -> None:
    opts = _opts(tmp_path, tiny_model_dir)
    out = tmp_path / "tuned.json"
    _run(opts, out)
    measured = _measured(opts)
    assert measured <= 6
    _run(opts, out)  # same budget: nothing new to do
    assert _measured(opts) == measured
    opts.trials = 5
    _run(opts, out)
    for s in _studies(opts):  # the budget counts distinct configs with a result
        assert len(_distinct(s)) == 5
    assert _measured(opts) == measured + 4


def test_cache_hits_across_samplers(tmp_path: Path, tiny_model_dir: Path) -> None:
    spaces = _small_space(tmp_path / "spaces", "dense", ", bfloat16")  # 4 configs
    opts = _opts(tmp_path, tiny_model_dir, ops=("pooler",), spaces_dir=spaces,
                 sampler="random", trials=4, seed=1)
    _run(opts, tmp_path / "a.json")
    assert _measured(opts) == 4
    (study,) = _studies(opts)
    optuna.delete_study(study_name=study.study_name, storage=opts.storage)
    # Another sampler, another seed, a new study: every config comes from the cache.
    opts.sampler, opts.seed = "tpe", 7
    _run(opts, tmp_path / "b.json")
    (study,) = _studies(opts)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 4
    assert all(t.user_attrs["cached"] for t in done)
    assert _measured(opts) == 4


def test_repeated_proposals_do_not_spend_the_budget(tmp_path: Path,
                                                    tiny_model_dir: Path) -> None:
    spaces = _small_space(tmp_path / "spaces", "dense", ", bfloat16")  # 4 configs
    opts = _opts(tmp_path, tiny_model_dir, ops=("pooler",), spaces_dir=spaces,
                 sampler="random", trials=3, seed=3)
    _run(opts, tmp_path / "a.json")
    opts.trials = 10  # more than the space holds: stops once every config has a result
    _run(opts, tmp_path / "b.json")
    (study,) = _studies(opts)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 4 == _measured(opts)
    repeats = [t for t in done if t.user_attrs["cached"]]
    assert len(done) == 4 + len(repeats)  # every repeat was served by the cache


def test_failures_are_recorded_and_the_search_goes_on(tmp_path: Path,
                                                      tiny_model_dir: Path) -> None:
    spaces = _small_space(tmp_path / "spaces",
                          "dense, test_raise, test_hang, test_crash, test_nan, test_wrong")
    opts = _opts(tmp_path, tiny_model_dir, ops=("pooler",), spaces_dir=spaces,
                 sampler="grid", trials=7, trial_timeout=3.0)
    _run(opts, tmp_path / "tuned.json")
    (study,) = _studies(opts)
    by_variant = {t.params["variant"]: t for t in study.trials}
    states = optuna.trial.TrialState
    assert by_variant["test_raise"].state == states.FAIL
    assert "deliberate failure" in by_variant["test_raise"].user_attrs["reason"]
    assert by_variant["test_hang"].user_attrs["status"] == "timeout"
    assert by_variant["test_crash"].user_attrs["status"] == "crash"
    assert by_variant["test_nan"].user_attrs["status"] == "wrong"
    wrong = by_variant["test_wrong"]  # measured, but infeasible through the constraint
    assert wrong.state == states.COMPLETE and wrong.user_attrs["rel_error"] > 0.02
    assert wrong.system_attrs["constraints:rel_error"] > 0
    config = json.loads((tmp_path / "tuned.json").read_text())
    assert config["ops"]["pooler"][0]["variant"] == "dense"
    assert config["ops"]["pooler"][0]["trials"]["failed"] == 4


def test_export_from_database_alone(tmp_path: Path, tiny_model_dir: Path) -> None:
    opts = _opts(tmp_path, tiny_model_dir, ops=("pooler",))
    _run(opts, tmp_path / "first.json")
    storage = open_optuna_storage(opts.storage)
    config = build_config(storage, "tiny-bert", "cpu", 0.02)
    assert config["ops"]["pooler"][0]["latency_ms"] > 0
    # a tighter tolerance excludes bfloat16 choices but still finds float32 ones
    strict = build_config(storage, "tiny-bert", "cpu", 1e-6)
    for choice in strict["ops"]["pooler"]:
        assert choice["rel_error"] <= 1e-6


@pytest.mark.parametrize("sampler", ["gp", "grid", "cmaes"])
def test_other_samplers_run(tmp_path: Path, tiny_model_dir: Path, sampler: str) -> None:
    opts = _opts(tmp_path, tiny_model_dir, ops=("attention",), sampler=sampler, trials=4)
    _run(opts, tmp_path / "t.json")
    (study,) = _studies(opts)
    assert len([t for t in study.trials if t.state.is_finished()]) >= 4


def test_warm_start_tries_the_other_buckets_best_once(tmp_path: Path,
                                                      tiny_model_dir: Path) -> None:
    opts = _opts(tmp_path, tiny_model_dir, ops=("ffn_up",), batch_sizes=(1, 2), trials=6)
    out = tmp_path / "tuned.json"
    _run(opts, out)
    studies = {s.user_attrs["batch"]: s for s in _studies(opts)}
    space = load_spaces(DEFAULT_SPACES_DIR, "cpu", ("ffn_up",))["ffn_up"]
    legal = {params_key(c) for c in space.configs(space_context(
        "ffn_up", TINY, Bucket(2, 8)))}
    baseline = params_key(studies[2].trials[0].params)
    warm = [r["params"] for r in ranked_configs(studies[1], opts.max_rel_error, WARM_K)[:WARM_K]
            if params_key(r["params"]) in legal and params_key(r["params"]) != baseline]
    assert warm, "bucket 1 has feasible configs to offer"
    b2 = [t.params for t in studies[2].trials if t.state in FINISHED]
    assert b2[1:1 + len(warm)] == warm  # right after the baseline
    measured = [t.params for t in studies[2].trials
                if t.state in FINISHED and not t.user_attrs["cached"]]
    for p in warm:  # enqueued once; a sampler proposing it again is answered by the cache
        assert measured.count(p) == 1
    n = len(studies[2].trials)
    _run(opts, out)  # resuming enqueues nothing again
    assert len(_studies(opts)[1].trials) == n


class _SlowerWhenRemeasured:
    """A measurement worker for which every tuned config re-measures 2x slower than the
    reference, and the reference's own config as fast as it."""

    def __init__(self, baseline: dict) -> None:
        self.baseline = baseline

    def run(self, task: object, timeout: float, stop: object) -> MeasureResult:
        same = params_key(task.params) == params_key(self.baseline)  # type: ignore[attr-defined]
        return MeasureResult(Status.OK, rel_error=0.0, cand_ms=1.0 if same else 2.0,
                             cand_iqr_ms=0.1, ref_ms=1.0, ref_iqr_ms=0.1, rounds=9)

    def close(self) -> None:
        pass


def test_remeasured_slower_than_the_reference_ships_the_reference_config(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    """The search found configs 2x faster; re-measured they are 2x slower than the reference:
    the study's final choice (what export ships) is the reference's own config."""
    from autotune.models.bert import resolve_model
    from autotune.search.driver import Searcher
    from autotune.search.loop import tell
    from autotune.search.objective import suggest

    opts = _opts(tmp_path, tiny_model_dir, ops=("pooler",), top_k=2)  # the two tuned ones
    searcher = Searcher(opts, resolve_model(opts.model))
    inst = next(i for i in searcher.instances if i.kind == "pooler")
    baseline = searcher.spaces["pooler"].baseline
    assert baseline is not None
    searcher.worker.close()
    searcher.worker = _SlowerWhenRemeasured(baseline)  # type: ignore[assignment]
    study = searcher.open_study(searcher.identity(inst))
    tuned = [{**baseline, "precision": "bfloat16"}, {**baseline, "impl": "aten_t"}]
    for params, ratio in [(baseline, 1.0), *((p, 0.5) for p in tuned)]:  # what search saw
        study.enqueue_trial(params)
        trial = study.ask()
        assert suggest(trial, searcher.spaces["pooler"]) == params
        tell(study, trial, MeasureResult(Status.OK, rel_error=0.0, cand_ms=ratio, ref_ms=1.0),
             opts.max_rel_error, cached=False)
    try:
        final = searcher.remeasure(study, inst)
    finally:
        searcher.close()
    assert final is not None and final["slower_than_reference"]
    assert final["params"] == baseline and final["cand_ms"] == 1.0
    assert ranked_configs(study, opts.max_rel_error, 1)[0]["params"] == baseline


def test_default_buckets_and_where_the_trials_go(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Given neither --batch-sizes nor --seq-lens, the default buckets; one of them narrows
    the other's default; cheap op kinds (embeddings, pooler) get at most 8 trials."""
    from autotune.models.bert import default_buckets, resolve_model
    from autotune.search.driver import CHEAP_TRIALS, Searcher

    arch = resolve_model(str(tiny_model_dir)).arch
    opts = _opts(tmp_path, tiny_model_dir, batch_sizes=(), seq_lens=(), trials=12,
                 ops=("embeddings", "ffn_up", "pooler"))
    assert opts.buckets(arch) == default_buckets(arch)
    assert [b.label for b in _opts(tmp_path, tiny_model_dir, batch_sizes=(4,),
                                   seq_lens=()).buckets(arch)] == ["b4s64"]  # its maximum
    assert [b.label for b in _opts(tmp_path, tiny_model_dir, batch_sizes=(),
                                   seq_lens=(16,)).buckets(arch)] == ["b1s16", "b8s16"]
    searcher = Searcher(opts, resolve_model(opts.model))
    try:
        budget = {(i.kind, i.bucket.label): searcher.trials(i.kind, i.bucket)
                  for i in searcher.instances}
    finally:
        searcher.close()
    assert {k for k, _ in budget} == {"embeddings", "ffn_up", "pooler"}
    for (kind, _), n in budget.items():
        assert n == (12 if kind == "ffn_up" else CHEAP_TRIALS), kind


def test_warm_started_studies_stop_once_they_stop_improving(tmp_path: Path,
                                                            tiny_model_dir: Path) -> None:
    """The second bucket starts from the first one's best configs and, with no --patience
    given, stops after 8 new configs without a new best instead of spending all 40."""
    opts = _opts(tmp_path, tiny_model_dir, ops=("ffn_up",), batch_sizes=(1, 2), trials=40)
    _run(opts, tmp_path / "tuned.json")
    first, second = sorted(_studies(opts), key=lambda s: s.user_attrs["batch"])
    assert len(_distinct(first)) == 40
    assert len(_distinct(second)) < 40


def test_a_study_measures_a_config_of_every_precision(tmp_path: Path,
                                                      tiny_model_dir: Path) -> None:
    """Stepping back goes one precision up (int8 → bfloat16 → float32): every study ends
    with a measured config of each, and of each variant computing in it (int8 per tensor,
    per token and static), whatever the sampler drew (the budget's last trials go to the legal
    config nearest the baseline of each tier still missing)."""
    from autotune.ops.registry import precision_of
    from autotune.search.loop import distance, tier_seeds

    space = load_spaces(DEFAULT_SPACES_DIR, "cpu", ("ffn_up",))["ffn_up"]
    configs = list(space.configs(space_context("ffn_up", TINY, Bucket(2, 8))))
    assert space.baseline is not None
    seeds = tier_seeds(space, configs)
    def tier(p: dict) -> tuple[str, object]:
        return precision_of("ffn_up", "cpu", p), p["variant"]

    assert sorted(tier(s) for s in seeds) == [
        ("bfloat16", "dense"), ("int8", "int8_dynamic"), ("int8", "int8_static"),
        ("int8", "int8_token")]
    for s in seeds:
        assert s in configs and distance(s, space.baseline) == min(
            distance(c, space.baseline) for c in configs if tier(c) == tier(s))

    opts = _opts(tmp_path, tiny_model_dir, ops=("ffn_up",), trials=5)
    _run(opts, tmp_path / "tuned.json")
    (study,) = _studies(opts)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {tier(t.params) for t in done} == {
        ("float32", "dense"), ("bfloat16", "dense"), ("int8", "int8_dynamic"),
        ("int8", "int8_static"), ("int8", "int8_token")}
    assert len({params_key(t.params) for t in done}) == 5  # within the budget

    # a study that runs out of patience early measures them before it stops
    opts = _opts(tmp_path, tiny_model_dir, ops=("ffn_up",), trials=30, patience=1,
                 storage=f"sqlite:///{tmp_path / 'patience.sqlite3'}")
    _run(opts, tmp_path / "tuned.json")
    (study,) = _studies(opts)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({params_key(t.params) for t in done}) < 30  # patience ended it
    assert {tier(t.params) for t in done} >= {
        ("float32", "dense"), ("bfloat16", "dense"), ("int8", "int8_dynamic"),
        ("int8", "int8_token")}


def test_the_per_op_export_skips_static_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the model-level study calibrates the model: a config built from the per-op studies
    alone has no ranges to ship, so it takes the best choice that needs none."""
    import autotune.export as export

    rows = [{"params": {"variant": "int8_static", "smooth_pct": 50}, "cand_ms": 1.0},
            {"params": {"variant": "int8_token"}, "cand_ms": 1.5}]
    monkeypatch.setattr(export, "ranked_configs", lambda study, tol, k: rows)
    best = export._best_of(None, 0.05)  # type: ignore[arg-type]
    assert best is not None and best["params"]["variant"] == "int8_token"
    monkeypatch.setattr(export, "ranked_configs", lambda study, tol, k: rows[:1])
    assert export._best_of(None, 0.05) is None  # type: ignore[arg-type]


def test_the_ranking_keeps_each_precisions_most_accurate_config() -> None:
    """Stepping back within a precision needs its accurate configs among the candidates: the
    ranking keeps the most accurate config of each precision, wherever it ranks by speed."""
    from optuna.distributions import CategoricalDistribution

    study = optuna.create_study()
    study.set_user_attr("kind", "ffn_up")
    configs = [({"variant": "int8_dynamic"}, 0.40, 0.030), ({"variant": "int8_token"}, 0.45,
                                                             0.020),
               ({"variant": "int8_static", "outliers": 0}, 0.46, 0.025),
               ({"variant": "int8_static", "outliers": 4}, 0.60, 0.008),
               ({"variant": "dense", "precision": "float32"}, 1.0, 0.0)]
    for params, value, err in configs:
        dists = {k: CategoricalDistribution([v]) for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, value=value,
            user_attrs={"status": "ok", "rel_error": err, "cand_ms": value, "ref_ms": 1.0}))
    ranked = [r["params"] for r in ranked_configs(study, 0.05, 2)]
    assert ranked == [configs[0][0], configs[1][0], configs[3][0], configs[4][0]]
