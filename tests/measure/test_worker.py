"""Measurement failures are data, and the worker survives them."""

from __future__ import annotations

import pytest

import tests.faulty_variants  # noqa: F401
from autotune.measure import MeasureTask, MeasureWorker
from autotune.measure.timing import Stats, time_interleaved
from tests.conftest import TINY

PRELOAD = ("tests.faulty_variants",)
DENSE = {"variant": "dense", "precision": "float32", "impl": "aten", "threads": 1}


def task(variant: str, params: dict | None = None) -> MeasureTask:
    return MeasureTask(TINY.to_dict(), "pooler", 2, 8, variant, params or {"variant": variant},
                       copies=2, budget_s=0.02)


@pytest.fixture(scope="module")
def worker():  # type: ignore[no-untyped-def]
    with MeasureWorker(PRELOAD) as w:
        yield w


def test_good_variant_is_measured(worker: MeasureWorker) -> None:
    r = worker.run(task("dense", DENSE), timeout=60)
    assert r.status == "ok", r.reason
    assert r.rel_error is not None and r.rel_error < 1e-6
    assert r.cand_ms and r.ref_ms and r.ratio and r.rounds >= 5


def test_exception_becomes_error(worker: MeasureWorker) -> None:
    r = worker.run(task("test_raise"), timeout=60)
    assert r.status == "error"
    assert "deliberate failure in test_raise" in r.reason


def test_nan_output_is_wrong(worker: MeasureWorker) -> None:
    r = worker.run(task("test_nan"), timeout=60)
    assert r.status == "wrong" and "non-finite" in r.reason


def test_wrong_output_is_measured_with_its_error(worker: MeasureWorker) -> None:
    r = worker.run(task("test_wrong"), timeout=60)
    assert r.status == "ok" and r.rel_error is not None and r.rel_error > 0.1


def test_hang_times_out_and_worker_restarts(worker: MeasureWorker) -> None:
    r = worker.run(task("test_hang"), timeout=2)
    assert r.status == "timeout" and "2 s" in r.reason
    assert worker.run(task("dense", DENSE), timeout=60).status == "ok"


def test_crash_is_reported_and_worker_restarts(worker: MeasureWorker) -> None:
    restarts = worker.restarts
    r = worker.run(task("test_crash"), timeout=60)
    assert r.status == "crash" and "SIGKILL" in r.reason
    assert worker.restarts == restarts + 1
    assert worker.run(task("dense", DENSE), timeout=60).status == "ok"


def test_unknown_variant_is_an_error(worker: MeasureWorker) -> None:
    r = worker.run(task("no_such_variant"), timeout=60)
    assert r.status == "error" and "unknown variant" in r.reason


def test_timing_interleaves_and_rotates_copies() -> None:
    calls: list[str] = []
    cand = [lambda i=i: calls.append(f"c{i}") for i in range(2)]
    ref = [lambda: calls.append("r")]
    c, r = time_interleaved(cand, ref, budget_s=0.0, min_rounds=5, max_rounds=5)
    assert c.n == r.n == 5
    assert {"c0", "c1"} <= set(calls)  # both weight copies were used
    # after warm-up, rounds alternate which side runs first
    assert "r" in calls[:4] and calls.count("r") >= 6


def test_stats_median_and_iqr() -> None:
    s = Stats.of([0.001, 0.002, 0.003, 0.004, 0.100])
    assert s.median_ms == pytest.approx(3.0)
    assert 0 < s.iqr_ms < 100


def test_sticky_cuda_error_replaces_the_worker(worker: MeasureWorker) -> None:
    before = worker.restarts
    r = worker.run(task("test_sticky_cuda_error"), timeout=60)
    assert r.status == "error" and "illegal memory access" in r.reason
    assert worker.restarts == before + 1  # a fresh process (and CUDA context) for the next one
    assert worker.run(task("dense", DENSE), timeout=60).status == "ok"


def test_cuda_task_runs_triton_in_the_worker() -> None:
    """A cuda task on the GPU, or without one on CPU tensors with Triton interpreted
    (tests/conftest.py sets TRITON_INTERPRET=1 for the worker too): built, gated and timed
    like any other."""
    params = {"variant": "triton", "precision": "bfloat16", "block_m": 16, "block_n": 32,
              "block_k": 32, "group_m": 4, "num_warps": 4, "num_stages": 2}
    t = MeasureTask(TINY.to_dict(), "pooler", 3, 8, "triton", params, device="cuda",
                    budget_s=0.02)
    with MeasureWorker() as w:
        r = w.run(t, timeout=120)
    assert r.status == "ok", r.reason
    assert r.rel_error is not None and 0 < r.rel_error < 2e-2  # bfloat16, not float32
