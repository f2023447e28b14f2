"""Claims of a shared budget: a claim nobody holds any more goes back to the budget."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from autotune.measure import MeasureResult, Status
from autotune.storage.cache import MeasurementCache
from autotune.storage.claims import Claims, retry_stale


def _trial(study: optuna.Study, key: str, state: TrialState) -> None:
    """A trial of ``state`` that asked for config ``key`` (as the driver marks it)."""
    trial = study.ask({"x": CategoricalDistribution(["dead", "running", "done"])})
    trial.set_user_attr("config_key", key)
    if state == TrialState.FAIL:
        study.tell(trial, state=TrialState.FAIL)


def test_orphaned_claims_are_released_and_the_others_kept(tmp_path: Path) -> None:
    """'dead': its trial FAILed (its worker killed inside the stale-trial callback, before the
    release) and nothing was measured; 'running': a live trial holds it; 'done': measured."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    claims = Claims(url, "study", budget=4, worker="w1")
    for key in ("dead", "running", "done"):
        assert claims.claim(key) is True
    _trial(study, "dead", TrialState.FAIL)
    _trial(study, "running", TrialState.RUNNING)
    MeasurementCache(url).put("done", "study", {"x": "done"}, MeasureResult(Status.OK, ""))
    assert claims.free() == 1
    assert claims.release_orphans(study) == ["dead"]
    assert claims.left(study) == 2
    assert claims.claim("dead") is True  # the config can be measured by a live worker now
    claims.close()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_retry_does_not_inherit_the_result_of_the_trial_it_retries(tmp_path: Path) -> None:
    """The worker died inside ``tell``: ``status`` and the result were stored on its trial but
    the study was never told. The retry queued for it must not carry that result: if it dies
    in turn (right after being asked), it would read as a second measurement of the config."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    study.set_user_attr("key", "study")
    trial = study.ask({"x": CategoricalDistribution(["a", "b"])})
    trial.set_user_attr("config_key", "k")
    trial.set_user_attr("worker", "w1")
    assert Claims(url, "study", budget=2, worker="w1").claim("k") is True
    res = MeasureResult(Status.OK, "", rel_error=0.0, cand_ms=1.0, ref_ms=2.0)
    MeasurementCache(url).put("k", "study", dict(trial.params), res)
    trial.set_user_attr("cached", False)
    for k, v in res.to_dict().items():  # "status" last, as loop.tell writes it
        if v is not None and k != "extra":
            trial.set_user_attr(k, v)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # its heartbeat went stale
    retry_stale(url)(study, storage.get_trial(trial._trial_id))

    retry = study.ask()
    assert retry.params == trial.params
    assert "status" not in retry.user_attrs and "cached" not in retry.user_attrs
    assert Claims(url, "study", budget=2, worker="w2").free() == 1  # measured: claim kept
    storage.set_trial_state_values(retry._trial_id, TrialState.FAIL)  # dies right after ask
    with_result = [t for t in study.get_trials() if "status" in t.user_attrs]
    assert [t.number for t in with_result] == [trial.number]
