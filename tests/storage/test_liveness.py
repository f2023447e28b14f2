"""A RUNNING trial whose worker died is failed and retried, whatever moment the worker died at
(SQLite storage with heartbeats switched on, so no server is needed)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from autotune.measure import MeasureResult, Status
from autotune.search.loop import LoopPolicy, run_trials
from autotune.space import Params, parse_space
from autotune.storage.liveness import MARK, WORKER, Liveness

GRACE = 1
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]


@pytest.fixture
def storage(tmp_path: Path) -> RDBStorage:
    return RDBStorage(f"sqlite:///{tmp_path / 'hb.sqlite3'}", heartbeat_interval=1,
                      grace_period=GRACE,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(3))


@pytest.fixture
def study(storage: RDBStorage) -> optuna.Study:
    return optuna.create_study(storage=storage)


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def _live(study: optuna.Study, storage: RDBStorage) -> Liveness:
    live = Liveness(study, storage)
    assert live.enabled and live.grace == GRACE
    return live


def test_a_trial_without_heartbeat_is_failed_after_the_grace_period(
        study: optuna.Study, storage: RDBStorage) -> None:
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # its worker dies here
    live = _live(study, storage)
    assert live.fail_dead() == []  # first seen now: not yet
    assert _states(study) == [TrialState.RUNNING]
    time.sleep(GRACE + 0.2)
    assert live.fail_dead() == [0]
    assert _states(study) == [TrialState.FAIL, TrialState.WAITING]  # retried
    failed = study.get_trials(deepcopy=False)[0]
    assert failed.user_attrs["reason"] == "stale: worker died before its first heartbeat"
    assert live.fail_dead() == []


def test_a_retried_trial_inherits_its_original_attrs_and_is_still_caught(
        study: optuna.Study, storage: RDBStorage) -> None:
    live = _live(study, storage)
    with live.running(study.ask()) as alive:
        assert alive  # this worker dies inside the trial: its heartbeat goes stale
    time.sleep(GRACE + 1.2)
    live.fail_dead()  # Optuna's rule: stale heartbeat
    assert _states(study) == [TrialState.FAIL, TrialState.WAITING]
    retry = study.ask()  # the retry (a copy, with the dead worker's attrs); dies right away
    assert retry.number == 1 and retry.user_attrs[WORKER] == live.worker
    assert retry.user_attrs[MARK] == 0  # the original's mark, not its own
    live.fail_dead()
    time.sleep(GRACE + 0.2)
    assert live.fail_dead() == [1]


def test_a_marked_trial_with_live_heartbeats_is_left_alone(
        study: optuna.Study, storage: RDBStorage) -> None:
    live, other = _live(study, storage), _live(study, storage)
    trial = study.ask()
    with live.running(trial) as alive:
        assert alive
        other.fail_dead()
        time.sleep(GRACE + 1.5)  # beats go on meanwhile
        assert other.fail_dead() == []
        assert _states(study) == [TrialState.RUNNING]
    study.tell(trial, 1.0)


def test_a_worker_whose_trial_was_failed_meanwhile_skips_it(
        study: optuna.Study, storage: RDBStorage) -> None:
    live = _live(study, storage)
    trial = study.ask()
    live.fail_dead()
    time.sleep(GRACE + 0.2)
    assert live.fail_dead() == [0]  # this worker stalled: another one failed its trial
    with live.running(trial) as alive:
        assert not alive


def test_waiting_on_a_hung_worker_is_said_and_bounded(study: optuna.Study) -> None:
    study.ask()  # another worker's trial that never ends (a hung worker, heartbeats or not)
    said: list[str] = []
    space = parse_space({"kind": "t", "params": {"variant": {
        "type": "categorical", "choices": ["a", "b", "c"]}}}, "t.yaml", "cpu")
    policy = LoopPolicy(trials=1, sampler="random", seed=0, tol=0.02, wait_limit_s=1.0)
    t0 = time.monotonic()
    run_trials(study, space, {}, policy, lambda params, trial: "unused", budget_left=lambda: 0,
               say=said.append)
    assert time.monotonic() - t0 < 10
    assert "waiting on other workers' trials" in said[0] and "#0" in said[0]
    assert said[-1].startswith("gave up") and "#0 (no heartbeat yet" in said[-1]


def test_a_worker_whose_trial_was_failed_while_it_measured_goes_on(
        study: optuna.Study, storage: RDBStorage) -> None:
    """This worker stalls in a measurement past the grace period; another one fails its trial
    as dead. Telling the result must not crash the worker: it goes on, and the trial's retry
    is answered from the (here: in-memory) cache."""
    space = parse_space({"kind": "t", "params": {"variant": {
        "type": "categorical", "choices": ["a", "b"]}}}, "t.yaml", "cpu")
    results: dict[str, MeasureResult] = {}

    def measure(params: Params, trial: optuna.Trial) -> tuple[MeasureResult, bool]:
        key = str(params["variant"])
        if key in results:
            return results[key], True
        res = MeasureResult(Status.OK, "", rel_error=0.0, cand_ms=1.0, ref_ms=2.0)
        results[key] = res
        if trial.number == 0:  # stalled past the grace period: failed as stale meanwhile
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            retry = storage.get_heartbeat_stale_trial_callback()
            assert retry is not None
            retry(study, storage.get_trial(trial._trial_id))
        return res, False

    said: list[str] = []
    policy = LoopPolicy(trials=2, sampler="random", seed=0, tol=0.02, wait_limit_s=5.0)
    run_trials(study, space, {}, policy, measure, budget_left=lambda: 2 - len(results),
               live=_live(study, storage), say=said.append)
    assert any("failed as stale by another worker" in m for m in said), said
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and "status" not in trials[0].user_attrs
    assert {t.params["variant"] for t in trials if t.state == TrialState.COMPLETE} == {"a", "b"}
