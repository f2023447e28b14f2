"""Kernel Tuner's brute-forced files imported as landscapes, and replay on their spaces."""

from __future__ import annotations

import gzip
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from autotune.cli import main
from autotune.search.kernel_tuner import import_kernel_tuner
from autotune.search.landscape import load_landscape, write_landscape
from autotune.search.replay import replay_once
from autotune.storage.results import FINISHED, params_key

A100 = Path(__file__).parents[1] / "data" / "kernel_tuner" / "convolution_A100.json.gz"


@pytest.fixture(scope="module")
def a100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kt") / "conv.json.gz"
    result = CliRunner().invoke(main, ["landscape", "import", str(A100), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "4362 configs (161 failed) of the 10240" in result.output
    return out


def test_import_keeps_the_space_the_failures_and_the_objective(a100: Path) -> None:
    raw = json.loads(gzip.decompress(A100.read_bytes()))
    land = load_landscape(a100)
    assert land.kind == "convolution_kernel" and land.device == "NVIDIA A100-PCIE-40GB"
    assert land.bucket is None and land.space is not None
    assert [p.name for p in land.space.params] == raw["tune_params_keys"]
    for p in land.space.params:
        assert list(p.choices) == raw["tune_params"][p.name]
    assert land.space.param("block_size_x").type == "int"  # 16..256 step 16: ordered
    assert land.size == len(raw["cache"]) == 4362
    failed = {r.reason for _, r in land.entries.values() if r.status != "ok"}
    assert failed == {"RuntimeFailedConfig", "CompilationFailedConfig"}
    assert sum(r.status != "ok" for _, r in land.entries.values()) == 161
    times = [e["time"] for e in raw["cache"].values() if isinstance(e["time"], float)]
    assert land.best() == pytest.approx(min(times))
    legal = {params_key(c) for c in land.space.configs(land.context)}
    assert legal == set(land.entries)  # restricted configs are no part of the space
    assert land.space.size() == 10240


def test_replay_on_an_imported_space_is_deterministic_per_seed(a100: Path) -> None:
    land = load_landscape(a100)
    space = land.search_space(Path("unused"))
    runs = {seed: replay_once(land, space, "default", seed, 40) for seed in (0, 1)}
    again = replay_once(land, space, "default", 0, 40)
    assert runs[0] == again and len(again) == 40
    assert runs[0] != runs[1]
    assert all(not math.isinf(v) for v in again[1:])  # every counted config was in the file
    assert sorted(again, reverse=True) == again  # best so far


def _kt_cache(entries: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"kernel_name": "k", "device_name": "gpu", "objective": "time",
            "tune_params_keys": ["a", "b"], "tune_params": {"a": [1, 2, 4], "b": ["x", "y"]},
            "cache": {f"{e['a']},{e['b']}": e for e in entries}, **extra}


def test_t4_and_cache_formats_agree(tmp_path: Path) -> None:
    entries = [{"a": 1, "b": "x", "time": 2.0}, {"a": 2, "b": "x", "time": 1.0},
               {"a": 4, "b": "y", "time": "RuntimeFailedConfig"},
               {"a": 4, "b": "x", "time": "InvalidConfig"}]
    (tmp_path / "c.json").write_text(json.dumps(_kt_cache(entries)))
    t4 = {"schema_version": "1.0.0", "metadata": {"kernel_name": "k", "device_name": "gpu"},
          "results": [{"configuration": {"a": e["a"], "b": e["b"]},
                       "invalidity": {"RuntimeFailedConfig": "runtime",
                                      "InvalidConfig": "constraints"}.get(str(e["time"]),
                                                                         "correct"),
                       "measurements": [{"name": "time", "value": e["time"], "unit": "ms"}]}
                      for e in entries]}
    (tmp_path / "t4.json").write_text(json.dumps(t4))
    a = import_kernel_tuner(tmp_path / "c.json")
    b = import_kernel_tuner(tmp_path / "t4.json")
    for doc in (a, b):
        write_landscape(doc, tmp_path / "l.json")
        land = load_landscape(tmp_path / "l.json")
        assert land.size == 3  # the restricted config is not part of the space
        assert land.best() == 1.0
        assert [r.status for _, r in sorted(land.entries.values(), key=lambda e: str(e[0]))] \
            == ["ok", "ok", "error"]
    assert a["space"]["params"]["a"] == {"type": "categorical", "choices": [1, 2, 4]}


@pytest.mark.parametrize(("flag", "best"), [(None, "GFLOP/s 300"),
                                           ("--lower-is-better", "GFLOP/s 100")])
def test_a_rate_is_ranked_by_its_inverse(flag: str | None, best: str, tmp_path: Path) -> None:
    """A higher-is-better objective (a rate, by its name or by the flag) is ranked by its
    inverse: the best config is the fastest, and 1% of it is 1% of the rate."""
    entries = [{"a": 1, "b": "x", "GFLOP/s": 100.0}, {"a": 2, "b": "x", "GFLOP/s": 300.0},
               {"a": 4, "b": "y", "GFLOP/s": 297.0}]
    (tmp_path / "c.json").write_text(json.dumps(_kt_cache(entries, objective="GFLOP/s")))
    out = tmp_path / "l.json"
    result = CliRunner().invoke(main, ["landscape", "import", str(tmp_path / "c.json"),
                                       "--output", str(out), *([flag] if flag else [])])
    assert result.exit_code == 0, result.output
    assert f"best {best}" in result.output
    land = load_landscape(out)
    ranked = sorted(land.entries.values(), key=lambda e: e[1].cand_ms)
    assert ranked[0][0]["a"] == (2 if flag is None else 1)
    if flag is None:
        assert ranked[1][1].cand_ms / ranked[0][1].cand_ms == pytest.approx(300 / 297)


def test_t4_results_name_their_objective_and_device(tmp_path: Path) -> None:
    """T4 as the methodology package writes it: the device under ``metadata.device``, the
    objective per result, a measurement that is a list of repeats, and a result timed only
    by ``times.runtimes``."""
    def result(a: int, **fields: Any) -> dict[str, Any]:
        return {"configuration": {"a": a}, "invalidity": "correct", "correctness": 1,
                "objectives": ["time"], "times": {}, **fields}
    t4 = {"schema_version": "1.1.0", "metadata": {"device": "A6000", "timeunit": "ms"},
          "results": [result(1, measurements=[{"name": "registers", "value": 1.0},
                                              {"name": "time", "value": [3.0, 5.0]}]),
                      result(2, times={"runtimes": [2.0, 2.5, 3.0]}),
                      result(3, invalidity="correctness", correctness=0)]}
    (tmp_path / "t4.json").write_text(json.dumps(t4))
    doc = import_kernel_tuner(tmp_path / "t4.json")
    assert doc["device"] == "A6000"
    times = {c["params"]["a"]: c.get("cand_ms") for c in doc["configs"]}
    assert times == {1: 4.0, 2: 2.5, 3: None}  # the failed one keeps its reason instead


@pytest.mark.parametrize(("content", "message"), [
    (b"not json", "cannot read a Kernel Tuner file"),
    (b"\x1f\x8b\x08broken", "cannot read a Kernel Tuner file"),
    (b"[1, 2]", "not a Kernel Tuner file"),
    (b'{"tune_params": {}}', "no 'cache' or 'results'"),
    (json.dumps(_kt_cache([{"a": 1, "b": "x"}])).encode(), "malformed Kernel Tuner file"),
    (json.dumps(_kt_cache([{"a": 1, "b": "x", "time": "RuntimeFailedConfig"}])).encode(),
     "no config with a measured 'time'"),
    (json.dumps({"results": []}).encode(), "malformed Kernel Tuner file"),
    (json.dumps(_kt_cache([{"a": 1, "b": "x", "score": -0.4}], objective="score")).encode(),
     "needs positive values"),
])
def test_bad_files_are_one_line_errors(content: bytes, message: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    result = CliRunner().invoke(main, ["landscape", "import", str(bad), "--output",
                                       str(tmp_path / "out.json")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "out.json").exists()


def test_replay_of_a_kernel_tuner_file_says_to_import_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["replay", "--landscape", str(A100), "--seeds", "1"])
    assert result.exit_code == 2
    assert "autotune landscape import" in result.output


def test_the_search_quality_section_shows_kernel_tuner_and_random_expectation() -> None:
    from autotune.report.html import replay_page
    from autotune.search.replay import SamplerScore

    replays = [{"landscape": "x.json.gz", "kind": "k", "bucket": "gpu", "size": 9,
                "budget": 3, "seeds": 2, "random_expected": {"0.01": 5.0, "0.03": 5.0,
                                                              "0.05": 2.5},
                "samplers": {name: SamplerScore.of(name, [[2.0, 1.0, 1.0],
                                                          [1.5, 1.5, 1.0]]).to_json()
                             for name in ("default", "kt:genetic_algorithm")}}]
    page = replay_page(replays)
    assert "kt:genetic_algorithm" in page and "random (expected)" in page
    assert ">2.5<" in page  # the expectation's row
    assert "<th>score</th>" not in page  # no methodology score computed: no column
    replays[0]["samplers"]["default"]["methodology_score"] = 0.8125
    replays[0]["samplers"]["kt:genetic_algorithm"]["methodology_score"] = 0.5
    page = replay_page(replays)
    assert "<th>score</th>" in page and ">0.812<" in page and ">0.500<" in page


def _benchmark(name: str) -> Any:
    """A module of ``benchmarks/`` (not a package: the scripts run from their folder)."""
    import importlib.util

    path = Path(__file__).parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_tuner_strategies_replay_the_same_file() -> None:
    """The comparison's other side: Kernel Tuner's GA in its simulation mode on the shipped
    file, counted in distinct configs like ours, deterministic for a seed."""
    kts = _benchmark("kernel_tuner_sim")
    curve = kts.best_so_far(A100, "genetic_algorithm", 0, 40)
    with gzip.open(A100) as f:
        doc = json.load(f)
    best = min(r["time"] for r in doc["cache"].values() if isinstance(r.get("time"), float))
    assert 0 < len(curve) <= 40
    assert all(a >= b for a, b in itertools.pairwise(curve))
    assert math.isinf(curve[0]) or curve[-1] >= best
    assert curve == kts.best_so_far(A100, "genetic_algorithm", 0, 40)


def test_the_methodology_score_is_one_for_the_optimum_and_orders_strategies() -> None:
    """The autotuning-methodology package's score over trials: 1 when the best config comes
    first, higher for a strategy that gets there sooner, below 0 for one that never gets
    past a bad config (worse than random search's expectation)."""
    kts = _benchmark("kernel_tuner_sim")
    valid = [1.0 + i / 10 for i in range(100)]
    assert kts.methodology_score(valid, [[1.0] * 20] * 3, 20) == pytest.approx(1.0)
    sooner = [[5.0] * 3 + [1.0] * 17, [4.0] * 5 + [1.0] * 15]
    later = [[5.0] * 10 + [1.0] * 10, [4.0] * 12 + [1.0] * 8]
    a, b = kts.methodology_score(valid, sooner, 20), kts.methodology_score(valid, later, 20)
    assert 1.0 > a > b
    stuck = [[math.inf, *([9.0] * 19)]]  # inf: nothing ran yet, counted as the worst
    assert kts.methodology_score(valid, stuck, 20) < 0


def test_the_default_search_evolves_and_screens_only_after_it_stalls(
        a100: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live loop's wiring of the steps for a stalled climb: the default replay on the
    imported A100 space asks for a child, or for the surrogate's pick among children, only
    once 15 configs in a row brought no 0.5% better best; once stalled, every second step is
    the surrogate's, it picks one of the children bred for it, and what the steps propose are
    the configs measured next."""
    from autotune.search import loop
    from autotune.search.samplers import DEFAULT_EVOLVE_AFTER

    land = load_landscape(a100)
    space = land.search_space(Path("unused"))  # the space travels with the landscape
    calls: dict[str, list[int]] = {"evolve": [], "screen": []}  # configs measured by then
    bred: list[str] = []  # children bred for the surrogate's current step ("": none)
    proposed: list[str] = []
    measured: list[str] = []
    evolve, screened, lookup = loop._evolve, loop._screened, type(land).lookup

    def count(study: Any) -> int:
        return len({params_key(t.params) for t in study.get_trials(deepcopy=False)
                    if t.state in FINISHED})  # not PRUNED: a proposal breaking a constraint

    def spy_evolve(study: Any, *args: Any, **kwargs: Any) -> Any:
        child = evolve(study, *args, **kwargs)
        if screening:
            bred.append("" if child is None else params_key(child))
            return child
        calls["evolve"].append(count(study))
        if child is not None:
            proposed.append(params_key(child))
        return child

    def spy_screened(study: Any, *args: Any) -> Any:
        calls["screen"].append(count(study))
        screening.append(True)
        bred.clear()
        pick = screened(study, *args)
        screening.clear()
        assert len(bred) == loop.SCREENED and (pick is None or params_key(pick) in bred)
        if pick is not None:
            proposed.append(params_key(pick))
        return pick

    def record(self: Any, params: Any) -> Any:
        measured.append(params_key(params))
        return lookup(self, params)
    screening: list[bool] = []
    monkeypatch.setattr(loop, "_evolve", spy_evolve)
    monkeypatch.setattr(loop, "_screened", spy_screened)
    monkeypatch.setattr(type(land), "lookup", record)
    curve = replay_once(land, space, "default", 1, 120)
    assert calls["evolve"] and calls["screen"] and proposed  # seed 1 stalls within 120
    for n in calls["evolve"] + calls["screen"]:  # configs since the last 0.5% improvement
        last = max(i for i in range(n) if i == 0 or curve[i] < curve[i - 1] * (1 - 0.005))
        assert n - 1 - last >= DEFAULT_EVOLVE_AFTER
    # alternating: the surrogate's picks (never None here) leave the other half to evolution
    assert abs(len(calls["screen"]) - len(calls["evolve"])) <= 1
    assert set(proposed) <= set(measured)
