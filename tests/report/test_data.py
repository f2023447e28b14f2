"""The report's numbers, from hand-made values and from the recorded database."""

from __future__ import annotations

import math
from typing import Any

import pytest

from autotune.models.bert import KNOWN_ARCHITECTURES, Bucket
from autotune.models.kinds import OP_KINDS, op_cost
from autotune.report import data
from autotune.report.read import ReportInput, StudyView, TrialView, read_report_input
from autotune.storage import open_optuna_storage

TOL = 0.02


def trial(n: int, value: float | None, err: float | None = 0.001, state: str = "COMPLETE",
          **params: Any) -> TrialView:
    return TrialView(number=n, state=state, value=value, params=params or {"v": n},
                     status="ok" if state == "COMPLETE" else "error", rel_error=err,
                     reason="" if state == "COMPLETE" else "boom")


def study(*trials: TrialView, kind: str = "ffn_up", choices: dict[str, tuple[Any, ...]]
          | None = None) -> StudyView:
    return StudyView(name=f"m:{kind}", kind=kind, batch=1, seq=128, trials=trials,
                     choices=choices or {}, counts={})


def test_history_tracks_the_best_feasible_value() -> None:
    s = study(trial(0, 1.0), trial(1, 0.5, err=0.5), trial(2, 0.8), trial(3, None, None, "FAIL"),
              trial(4, 0.9), trial(5, 0.6))
    h = data.history(s, TOL)
    assert h.numbers == [0, 1, 2, 4, 5]
    assert h.feasible == [True, False, True, True, True]
    assert h.best_values == [1.0, 1.0, 0.8, 0.8, 0.6]  # the infeasible 0.5 never counts


def test_history_starts_at_the_first_feasible_trial() -> None:
    h = data.history(study(trial(0, 0.3, err=0.9), trial(1, 0.7)), TOL)
    assert h.best_numbers == [1] and h.best_values == [0.7]


def test_pareto_front() -> None:
    pts = [(0.0, 1.0), (0.01, 0.5), (0.02, 0.6), (0.03, 0.2), (0.001, 1.2)]
    assert data.pareto_front(pts) == [0, 1, 3]
    assert data.pareto_front([]) == []


def test_latency_vs_error_counts_each_config_once_and_marks_the_front() -> None:
    s = study(trial(0, 1.0, 0.0, v=1), trial(1, 0.9, 0.0, v=1), trial(2, 0.4, 0.01, v=2),
              trial(3, 0.5, 0.03, v=3))
    pts = data.latency_vs_error(s, TOL)
    assert [p.number for p in pts] == [0, 2, 3]  # trial 1 repeats trial 0's config
    assert {p.number: (p.feasible, p.on_front) for p in pts} == {
        0: (True, True), 2: (True, True), 3: (False, False)}


def test_parallel_coords_positions() -> None:
    s = study(trial(0, 1.0, 0.0, impl="a", block=64), trial(1, 0.5, 0.01, impl="b"),
              choices={"impl": ("a", "b", "c"), "block": (0, 64, 128)})
    axes, lines = data.parallel_coords(s, TOL)
    assert [a.name for a in axes] == ["impl", "block", "rel error", "time ratio"]
    assert axes[0].labels == ["a", "b", "c"]
    first, second = lines
    assert first.ys[:2] == [0.0, 0.5] and second.ys[:2] == [0.5, data.UNSET_Y]
    assert first.ys[3] == 1.0 and second.ys[3] == 0.0  # slowest at the top of the ratio axis
    assert axes[2].labels[0] == "0"  # an exact result is drawn at the floor, labelled 0
    assert all(0.0 <= y <= 1.0 for ln in lines for y in ln.ys[2:])


def test_failure_groups_by_reason_with_distinct_configs() -> None:
    a = TrialView(0, "FAIL", None, {"v": 1}, status="error", reason="OOM at 0xdeadbeef\nmore")
    b = TrialView(1, "FAIL", None, {"v": 2}, status="error", reason="OOM at 0x1234")
    repeat = TrialView(2, "FAIL", None, {"v": 2}, status="error", reason="OOM at 0x1234")
    pruned = TrialView(3, "PRUNED", None, {"v": 3}, reason="constraint: too_big")
    ok = trial(4, 0.5)
    groups = data.failure_groups([study(a, b, repeat, pruned, ok),
                                  study(a, kind="qkv_proj")])
    assert [(g.outcome, g.reason, g.count) for g in groups] == [
        ("failed (error)", "OOM at 0x…", 3), ("pruned", "constraint: too_big", 1)]
    assert groups[0].studies == ["ffn_up b1s128", "qkv_proj b1s128"]
    assert groups[0].example == {"v": 1}


def test_op_cost_of_a_gemm_counts_multiply_adds_twice() -> None:
    arch = KNOWN_ARCHITECTURES["bert-base-uncased"]
    flops, nbytes = op_cost("ffn_up", arch, Bucket(8, 128), "bfloat16")
    t, h, i = 8 * 128, 768, 3072
    assert flops == pytest.approx(2 * t * h * i, rel=0.01)
    assert nbytes == 2 * (h * i + t * h + t * i)
    fp32 = op_cost("ffn_up", arch, Bucket(8, 128), "float32")[1]
    assert op_cost("ffn_up", arch, Bucket(8, 128), "int8")[1] == fp32 - 3 * h * i  # 1-byte weights
    for kind in OP_KINDS:
        f, b = op_cost(kind, arch, Bucket(1, 128))
        assert f > 0 and b > 0


def test_roof_is_the_lower_of_bandwidth_and_compute() -> None:
    assert data.roof(1000.0, 20.0, [1.0, 50.0, 100.0]) == [20.0, 1000.0, 1000.0]


@pytest.fixture(scope="module")
def recorded(recorded_url: str) -> ReportInput:
    storage = open_optuna_storage(recorded_url)
    return read_report_input(recorded_url, storage, "bert-base-uncased", "cpu", "elsewhere")


def test_recorded_database_reads_back(recorded: ReportInput) -> None:
    assert recorded.max_rel_error == 0.05  # the newest winners were judged at 0.05
    assert {(s.kind, s.bucket) for s in recorded.studies} == {
        (k, b) for k in ("attention", "ffn_up", "pooler") for b in ("b1s128", "b8s128")}
    assert recorded.config is not None and recorded.composition is not None
    assert recorded.peaks is None  # peaks are the CLI's business
    assert {r["peer"] for r in recorded.bench} >= {"tuned", "eager"}
    for s in recorded.studies:
        assert sum(s.counts[k] for k in ("feasible", "infeasible", "failed")) >= 12
        assert set(s.importances) <= set(s.choices)


def test_op_rows_follow_the_shipped_config(recorded: ReportInput) -> None:
    rows = data.op_rows(recorded)
    assert [(r.kind, r.bucket) for r in rows] == [
        (k, b) for b in ("b1s128", "b8s128") for k in ("attention", "ffn_up", "pooler")]
    assert recorded.config is not None
    for r in rows:
        entry = next(e for e in recorded.config["ops"][r.kind] if e["bucket"]["batch"] == r.batch)
        assert r.variant == entry["variant"] and r.best_ms == entry["latency_ms"]
        assert r.speedup == pytest.approx(entry["baseline_ms"] / entry["latency_ms"])
        assert r.count == (1 if r.kind == "pooler" else 12)
        assert r.rel_error is not None and r.rel_error <= recorded.max_rel_error


def test_time_shares_and_graph(recorded: ReportInput) -> None:
    rows = data.op_rows(recorded)
    shares = data.time_shares(rows)
    for bucket, ss in shares.items():
        mine = {r.kind: r for r in rows if r.bucket == bucket}
        for s in ss:
            assert s.before_ms == pytest.approx(mine[s.kind].count * (mine[s.kind].ref_ms or 0))
    nodes = data.forward_graph(rows)
    assert [n.id for n in nodes] == ["attention", "ffn_up", "pooler"]
    assert [n.in_layer for n in nodes] == [True, True, False]
    for b in shares:
        assert math.isclose(sum(n.shares[b] for n in nodes), 1.0)


def test_roofline_points(recorded: ReportInput) -> None:
    pts = data.roofline(data.op_rows(recorded), recorded.arch)
    assert len(pts) == 6
    for p in pts:
        assert p.tuned_gflops > 0 and p.ref_gflops > 0
        if p.precision != "float32":
            assert p.intensity > p.ref_intensity  # fewer bytes at lower precision


def test_bench_rows_tuned_first(recorded: ReportInput) -> None:
    for rows in data.bench_by_bucket(recorded.bench).values():
        assert rows[0]["peer"] == "tuned"
        others = [r["median_ms"] for r in rows[1:]]
        assert others == sorted(others)
