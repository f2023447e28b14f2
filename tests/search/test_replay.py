"""Replay against recorded landscapes: deterministic, scored right, faithful to the loop."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from autotune.cli import main
from autotune.models.bert import Bucket
from autotune.search.landscape import load_landscape
from autotune.search.loop import distance
from autotune.search.replay import replay_once, score, trials_to_reach
from autotune.search.spaces import load_spaces, space_context
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.space import Params, Space
from autotune.storage.results import params_key
from tests.conftest import TINY

RECORDINGS = sorted((Path(__file__).parents[1] / "data" / "landscapes").glob("*.json"))
POOLER_CTX = {**space_context("pooler", TINY, Bucket(1, 8)), "cores": 2,
              "qengines": ["onednn", "x86", "fbgemm"]}


def pooler_space() -> Space:
    return load_spaces(DEFAULT_SPACES_DIR, "cpu", ("pooler",))["pooler"]


def write_landscape(path: Path, ratio_of: Any, tol: float = 0.02) -> Path:
    """Every pooler config, with the result ``ratio_of(params)`` gives: a ratio, or a
    (status, reason) pair for a failure."""
    ctx = dict(POOLER_CTX)
    ctx["qengines"] = tuple(ctx["qengines"])
    configs = []
    for p in pooler_space().configs(ctx):
        r = ratio_of(p)
        if isinstance(r, tuple):
            configs.append({"params": p, "status": r[0], "reason": r[1]})
        else:
            err = 0.05 if p["variant"] == "int8_dynamic" else 0.001
            configs.append({"params": p, "status": "ok", "reason": "", "rel_error": err,
                            "cand_ms": r, "ref_ms": 1.0})
    doc = {"format": "autotune-landscape", "version": 1, "model": "tiny", "kind": "pooler",
           "device": "cpu", "bucket": {"batch": 1, "seq": 8}, "arch": TINY.to_dict(),
           "context": POOLER_CTX, "max_rel_error": tol, "configs": configs}
    path.write_text(json.dumps(doc))
    return path


BASELINE = {"variant": "dense", "precision": "float32", "impl": "aten", "threads": 2}


def test_a_sampler_that_finds_the_optimum_first_scores_one(tmp_path: Path) -> None:
    # the baseline is the optimum and every study measures it first
    land = load_landscape(write_landscape(
        tmp_path / "l.json", lambda p: 0.5 if p == BASELINE else 1.0 + len(repr(p)) / 100))
    for name in ("tpe", "random", "default"):
        s = score(land, pooler_space(), name, seeds=3, budget=10)
        assert s.median_trials == {0.01: 1.0, 0.03: 1.0, 0.05: 1.0}, name
        assert s.reached[0.01] == 1.0
        assert all(c[0] == 1.0 for c in s.curves)


def test_trials_to_reach_counts_distinct_configs() -> None:
    curve = [math.inf, 3.0, 1.2, 1.2, 1.02, 1.0]
    assert trials_to_reach(curve, 1.05) == 5.0
    assert trials_to_reach(curve, 1.0) == 6.0
    assert trials_to_reach(curve, 0.9) == math.inf
    assert trials_to_reach([], 2.0) == math.inf


def test_grid_replay_finds_the_optimum_where_the_shuffle_put_it(tmp_path: Path) -> None:
    target = {"variant": "dense", "precision": "bfloat16", "impl": "onednn_packed",
              "fuse_epilogue": True, "threads": 1}
    land = load_landscape(write_landscape(tmp_path / "l.json",
                                          lambda p: 0.3 if p == target else 1.0))
    space = pooler_space()

    def position(seed: int) -> int:  # the baseline, then the loop's seeded shuffle
        configs = list(space.configs(land.context))
        random.Random(seed).shuffle(configs)
        order = [space.baseline, *(c for c in configs if c != space.baseline)]
        return [params_key(c) for c in order].index(params_key(target)) + 1

    curve = replay_once(land, space, "grid", seed=7, budget=land.size)
    assert len(curve) == land.size  # grid measures every config once
    assert trials_to_reach(curve, 0.3) == position(7)
    s = score(land, space, "grid", seeds=1, budget=land.size)  # seed 0
    assert s.median_trials == {w: float(position(0)) for w in (0.01, 0.03, 0.05)}


def test_replay_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    land = load_landscape(write_landscape(tmp_path / "l.json",
                                          lambda p: 1.0 + (hash(params_key(p)) % 97) / 50))
    for name in ("tpe", "default", "random+local"):
        a = replay_once(land, pooler_space(), name, seed=3, budget=15)
        assert a == replay_once(land, pooler_space(), name, seed=3, budget=15), name
        assert len(a) == 15


def test_failed_and_infeasible_configs_behave_as_live(tmp_path: Path) -> None:
    # int8 is fast but over the tolerance; onednn_packed fails: neither may become the best
    def result(p: Params) -> Any:
        if p.get("impl") == "onednn_packed":
            return ("error", "build failed")
        return 0.1 if p["variant"] == "int8_dynamic" else 1.0 - 0.1 * p["threads"]

    land = load_landscape(write_landscape(tmp_path / "l.json", result))
    assert land.best() == pytest.approx(0.8)
    curve = replay_once(land, pooler_space(), "random", seed=0, budget=land.size)
    assert min(curve) == pytest.approx(0.8)
    assert land.lookup({"variant": "nope"}).reason == "not in the recording"


def test_patience_stops_a_replay_early(tmp_path: Path) -> None:
    land = load_landscape(write_landscape(tmp_path / "l.json", lambda p: 1.0))
    # four configs without a new best after the first, then the tiers (float32, bfloat16,
    # int8 per tensor, int8 per token) those five lack: a study ends with a config of each
    # (see tier_seeds)
    lengths = [len(replay_once(land, pooler_space(), "random", seed, 30, patience=4))
               for seed in range(8)]
    assert all(5 <= n <= 8 for n in lengths), lengths
    assert len(set(lengths)) > 1, lengths  # the fill depends on what the five drew


def test_distance_counts_shared_parameters_only() -> None:
    a = {"variant": "dense", "precision": "float32", "threads": 1}
    assert distance(a, {**a, "threads": 2}) == 1
    assert distance(a, {"variant": "int8_dynamic", "qengine": "x86", "threads": 1}) == 1
    assert distance(a, a) == 0


def test_the_pool_finds_what_distance_and_crossover_say() -> None:
    """The steps' scans run on integer codes (one column per parameter): on a space whose
    variants have different parameters, and for centers with values no config has, the
    configs one step away and the children of two parents are exactly those ``distance``
    and the parameter-wise crossover name."""
    from autotune.search.loop import Pool

    rng = random.Random(1)
    space: list[Params] = []
    for _ in range(400):
        if rng.random() < 0.5:
            space.append({"variant": "a", "bm": rng.choice([16, 32, 64]),
                          "threads": rng.choice([1, 2]), "fuse": rng.choice([True, False])})
        else:
            space.append({"variant": "b", "bm": rng.choice([16, 32]), "threads": rng.choice([1, 2]),
                          "engine": rng.choice(["x86", "onednn"])})
    space = list({params_key(c): c for c in space}.values())
    pool = Pool(space)
    centers = [*rng.sample(space, 8), {"variant": "a", "bm": 128, "threads": 2, "fuse": True},
               {"variant": "c", "threads": 1}]
    for center in centers:
        assert pool.at_distance_one(center).tolist() == [distance(c, center) == 1 for c in space]
    for a, b in itertools.pairwise(centers):
        assert pool.made_of(a, b).tolist() == [
            all(v in (a.get(k), b.get(k)) for k, v in c.items()) for c in space]
    seen = {params_key(c) for c in space[::3]}
    assert pool.unseen(seen).tolist() == [params_key(c) not in seen for c in space]


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
def test_recorded_landscapes_load_and_cover_their_space(path: Path) -> None:
    """Each recording carries the space it was recorded on (the shipped spaces have grown
    since: ``int8_token``), so replays on it stay comparable with earlier ones."""
    land = load_landscape(path)
    assert land.space is not None
    space = land.search_space(DEFAULT_SPACES_DIR)
    keys = {params_key(p) for p in space.configs(land.context)}
    assert keys <= set(land.entries), "the recording lacks configs of the search space"
    land = land.within(space)
    assert set(land.entries) == keys
    assert 100 <= land.size <= 1000 and land.best() > 0


def test_at_least_three_op_kinds_are_recorded() -> None:
    assert len({load_landscape(p).kind for p in RECORDINGS}) >= 3


def test_bad_landscape_files_are_one_line_errors(tmp_path: Path) -> None:
    for text, msg in (("{", "cannot read landscape"), ('{"format": "x"}', "not an autotune"),
                      ('{"format": "autotune-landscape", "version": 9}', "version 9"),
                      ('{"format": "autotune-landscape", "version": 1}', "malformed")):
        f = tmp_path / "bad.json"
        f.write_text(text)
        r = CliRunner().invoke(main, ["replay", "--landscape", str(f), "--seeds", "1"])
        assert r.exit_code == 2 and msg in r.output, r.output


def test_replay_cli_prints_the_table_and_writes_curves(tmp_path: Path) -> None:
    land = write_landscape(tmp_path / "l.json", lambda p: 0.5 if p == BASELINE else 1.0)
    out = tmp_path / "replay.json"
    r = CliRunner().invoke(main, ["replay", "--landscape", str(land), "--sampler",
                                  "default,random", "--seeds", "2", "--budget", "5",
                                  "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "within 3%" in r.output and "default" in r.output
    doc = json.loads(out.read_text())
    (rep,) = doc["replays"]
    assert rep["samplers"]["random"]["median_trials"]["0.03"] == 1.0
    assert len(rep["samplers"]["default"]["curves"]) == 2
    assert "Plotly.newPlot" in out.with_suffix(".html").read_text()


def test_grid_search_records_a_landscape_that_replays(tmp_path: Path,
                                                      tiny_model_dir: Path) -> None:
    import io

    from rich.console import Console

    from autotune.cli import run_search
    from autotune.search.driver import SearchOptions

    url = f"sqlite:///{tmp_path / 'at.sqlite3'}"
    opts = SearchOptions(model=str(tiny_model_dir), batch_sizes=(1,), seq_lens=(8,),
                         trials=1000, sampler="grid", time_per_trial=0.01, storage=url,
                         spaces_dir=DEFAULT_SPACES_DIR, ops=("pooler",), compose_trials=0)
    assert run_search(opts, tmp_path / "t.json", Console(file=io.StringIO())) == 0
    out = tmp_path / "land.json"
    args = ["landscape", "export", "--op", "pooler", "--model", "tiny-bert", "--batch-size",
            "1", "--seq-len", "8", "--storage", url, "--output", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    land = load_landscape(out)
    space = pooler_space()
    assert set(land.entries) == {params_key(p) for p in space.configs(land.context)}
    assert f"{land.size} of the {land.size} configs" in r.output
    curve = replay_once(land, space, "default", seed=0, budget=10)
    assert len(curve) == 10 and min(curve) >= land.best()
    r = CliRunner().invoke(main, [*args[:3], "ffn_up", *args[4:]])
    assert r.exit_code == 2 and "no ffn_up b1s8 study" in r.output


def test_report_shows_replay_results(tmp_path: Path) -> None:
    from tests.report.recorded import load

    land = write_landscape(tmp_path / "l.json", lambda p: 0.5 if p == BASELINE else 1.0)
    rp = tmp_path / "replay.json"
    r = CliRunner().invoke(main, ["replay", "--landscape", str(land), "--seeds", "2",
                                  "--budget", "4", "--output", str(rp)])
    assert r.exit_code == 0, r.output
    url = f"sqlite:///{tmp_path / 'rec.sqlite3'}"
    load(url)
    page = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", "--storage", url, "--no-measure-peaks",
                                  "--output", str(page), "--replay", str(rp)])
    assert r.exit_code == 0, r.output
    html = page.read_text()
    size = load_landscape(land).size  # every pooler config
    assert 'id="replay"' in html and f"pooler b1s8: {size} configs, budget 4, 2 seeds" in html
    assert '<a href="#replay">Search quality</a>' in html
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = CliRunner().invoke(main, ["report", "--storage", url, "--replay", str(bad)])
    assert r.exit_code == 2 and "not the output of `autotune replay" in r.output


def _study_with(results: list[tuple[Params, float, float]]) -> Any:
    """An in-memory study holding finished trials: (params, time ratio, rel. error)."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    for params, ratio, err in results:
        dists = {k: CategoricalDistribution([v]) for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, value=ratio,
            user_attrs={"status": "ok", "rel_error": err}))
    return study


def test_recombination_crosses_two_of_the_best_configs() -> None:
    """The case a one-parameter step misses: a and b each changed one parameter of the
    baseline and lost; both changes together win. Recombining the best pair (the baseline
    and a, whose children are all seen) yields nothing new, so the next pair's child, the
    combination of a's and b's changes, is proposed, and an infeasible config is no parent."""
    from autotune.search.loop import Pool, _recombine

    base = {"x": 1, "y": 1, "z": 1}
    a, b, bad = {**base, "x": 2}, {**base, "y": 2}, {**base, "z": 2}
    study = _study_with([(base, 1.0, 0.0), (a, 1.1, 0.0), (b, 1.2, 0.0), (bad, 0.5, 0.9)])
    space = [{"x": x, "y": y, "z": z} for x in (1, 2) for y in (1, 2) for z in (1, 2)]
    pool = Pool(space)
    seen = {params_key(c) for c in (base, a, b, bad)}
    rng = random.Random(0)
    assert _recombine(study, pool, seen, 0.02, rng) == {"x": 2, "y": 2, "z": 1}
    # every child of every pair of feasible configs seen: nothing to propose
    assert _recombine(study, pool, seen | {params_key({"x": 2, "y": 2, "z": 1})},
                      0.02, rng) is None
    # only the two best are parents when asked so: their children are seen
    assert _recombine(study, pool, seen, 0.02, rng, parents=2) is None


def test_evolution_breeds_unseen_children_of_the_best_configs() -> None:
    """A climb stuck at ``stuck`` (every one-parameter change seen and slower): an evolution
    step crosses the best configs, scattered over two basins, into configs the climb cannot
    reach in one step; each parameter comes from a parent unless the child was mutated one
    step further; infeasible configs are no parents; seen configs are never proposed."""
    from autotune.search.loop import Pool, _evolve

    space = [{"x": x, "y": y, "z": z} for x in range(4) for y in range(4) for z in range(4)]
    stuck, other = {"x": 0, "y": 0, "z": 0}, {"x": 3, "y": 3, "z": 3}
    bad = {"x": 0, "y": 3, "z": 0}
    measured = [stuck, other, bad, *[c for c in space if distance(c, stuck) == 1 and c != bad]]
    study = _study_with([(c, 1.0 if c == stuck else 0.5 if c == bad else
                          1.2 if c == other else 1.5, 0.9 if c == bad else 0.0)
                         for c in measured])
    pool = Pool(space)
    seen = {params_key(c) for c in measured}
    rng = random.Random(0)
    children = [_evolve(study, pool, seen, 0.02, rng) for _ in range(200)]
    assert all(c is not None and params_key(c) not in seen for c in children)
    parents = [stuck, other, *[c for c in measured if c not in (stuck, other, bad)]]
    crossed = [c for c in children if c is not None and any(
        all(c[k] in (p[k], q[k]) for k in c) for p in parents for q in parents)]
    mutated = [c for c in children if c is not None and c not in crossed]
    assert len(crossed) > len(mutated) > 0  # mostly crossovers; mutation is the exception
    # the climb's blind spot: two or three parameters changed at once, from both basins
    assert any(distance(c, stuck) >= 2 and distance(c, other) >= 1 for c in crossed)
    assert all(distance(c, stuck) >= 2 for c in children if c is not None)
    # the same seed, the same children
    again = random.Random(0)
    assert children == [_evolve(study, pool, seen, 0.02, again) for _ in range(200)]
    # fewer than two feasible configs: nothing to breed from
    lone = _study_with([(stuck, 1.0, 0.0), (bad, 0.5, 0.9)])
    assert _evolve(lone, pool, {params_key(stuck), params_key(bad)}, 0.02, rng) is None


def test_the_surrogate_learns_pairs_of_values_and_avoids_failures() -> None:
    """What the surrogate is for: a config is fast when two parameters agree (x == y), which no
    single value tells (every value of x and of y is as often fast as slow), and configs with
    z == 3 fail to run. Of the unseen configs it proposes the one on the diagonal that does
    not fail; a model of single values (or one that ignored failures) could not tell it from
    the rest. With fewer than 10 results it proposes nothing."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from autotune.search.loop import Pool, Surrogate

    space = [{"x": x, "y": y, "z": z} for x in range(4) for y in range(4) for z in range(4)]
    pool = Pool(space)
    held_out = [{"x": 1, "y": 1, "z": 3}, {"x": 2, "y": 2, "z": 1},  # diagonal: fast
                {"x": 0, "y": 2, "z": 1}, {"x": 3, "y": 1, "z": 0}, {"x": 1, "y": 0, "z": 2}]
    study = optuna.create_study()
    dists = {k: CategoricalDistribution(list(range(4))) for k in "xyz"}
    for c in space:
        if c in held_out:
            continue
        if c["z"] == 3:
            study.add_trial(optuna.trial.create_trial(
                params=c, distributions=dists, state=TrialState.FAIL,
                user_attrs={"status": "error"}))
        else:
            study.add_trial(optuna.trial.create_trial(
                params=c, distributions=dists, value=(1.0 if c["x"] == c["y"] else 2.0)
                * (1 + 0.01 * c["z"]), user_attrs={"status": "ok", "rel_error": 0.0}))
    seen = {params_key(c) for c in space if c not in held_out}
    model = Surrogate(pool)
    assert model.fastest(study, 0.02, pool.unseen(seen)) == {"x": 2, "y": 2, "z": 1}
    # once that one is seen too, the other diagonal config: fast pair, failing z
    seen.add(params_key({"x": 2, "y": 2, "z": 1}))
    assert model.fastest(study, 0.02, pool.unseen(seen)) == {"x": 1, "y": 1, "z": 3}
    few = optuna.create_study()
    for c in space[:9]:
        few.add_trial(optuna.trial.create_trial(params=c, distributions=dists, value=1.0,
                                                user_attrs={"status": "ok", "rel_error": 0.0}))
    assert Surrogate(pool).fastest(few, 0.02, pool.unseen(set())) is None
