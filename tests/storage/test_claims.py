"""Claims of a shared budget: a claim nobody holds any more goes back to the budget."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from autotune.measure import MeasureResult, Status
from autotune.storage.cache import MeasurementCache
from autotune.storage.claims import Claims


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
