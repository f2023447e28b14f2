"""Claims: how workers sharing one database split a study's budget without measuring a
config twice.

A worker claims a config before measuring it: one row per (study, config), holding one of the
study's ``budget`` slots. A config already claimed is in flight or done elsewhere; when no slot
is free the budget is spent. A worker that dies leaves its claim until its trial's heartbeat
goes stale; the trial is then failed, its claim released and the trial retried, so the slot
is used exactly once in the end.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import DateTime, Integer, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from autotune.storage.cache import Base, Measurement, open_engine

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


class Claim(Base):
    __tablename__ = "autotune_claims_v1"
    __table_args__ = (UniqueConstraint("study_key", "slot"),)

    study_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    config_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Claims:
    def __init__(self, url: str, study_key: str, budget: int, worker: str) -> None:
        self.engine = open_engine(url)
        self.study_key, self.budget, self.worker = study_key, budget, worker

    def _taken(self, s: Session) -> set[int]:
        return set(s.scalars(select(Claim.slot).where(Claim.study_key == self.study_key)))

    def free(self) -> int:
        with Session(self.engine) as s:
            return self.budget - len(self._taken(s))

    def claim(self, config_key: str) -> bool | None:
        """True: this worker measures the config. False: another worker has it. None: no
        slot is left, the budget is spent."""
        for _ in range(self.budget + 1):
            with Session(self.engine) as s:
                if s.get(Claim, (self.study_key, config_key)) is not None:
                    return False
                free = sorted(set(range(self.budget)) - self._taken(s))
                if not free:
                    return None
                s.add(Claim(study_key=self.study_key, config_key=config_key, slot=free[0],
                            worker=self.worker, created=datetime.now(UTC)))
                try:
                    s.commit()
                    return True
                except IntegrityError:  # another worker took the slot or the config: look again
                    s.rollback()
        return None

    def release(self, config_key: str, worker: str | None = None) -> None:
        """Give the slot back (the trial was interrupted, or its worker died), if ``worker``
        (default: this one) holds it: a worker that died before claiming must not free the
        claim another worker holds on the same config."""
        with Session(self.engine) as s:
            s.execute(delete(Claim).where(Claim.study_key == self.study_key,
                                          Claim.config_key == config_key,
                                          Claim.worker == (worker or self.worker)))
            s.commit()

    def left(self, study: optuna.Study) -> int:
        """Free slots of the budget, once orphaned claims are released."""
        self.release_orphans(study)
        return self.free()

    def release_orphans(self, study: optuna.Study) -> list[str]:
        """Release the claims that no live trial holds and no measurement fills: a worker
        killed inside another's stale-trial callback (the dead trial already FAILed, its claim
        not yet released) would otherwise keep a slot of the budget forever. Read in this
        order: claims, then live trials, then measurements; a claim taken meanwhile is not in
        the first read, and a trial that finished meanwhile stored its measurement first."""
        from optuna.trial import TrialState

        with Session(self.engine) as s:
            held = list(s.execute(select(Claim.config_key, Claim.worker)
                                  .where(Claim.study_key == self.study_key)))
        if not held:
            return []
        live = {t.user_attrs.get("config_key") for t in study.get_trials(
            deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))}
        unheld = [key for key, _ in held if key not in live]
        released = []
        with Session(self.engine) as s:
            measured = set(s.scalars(select(Measurement.key)
                                     .where(Measurement.key.in_(unheld)))) if unheld else set()
            for key, worker in held:
                if key in unheld and key not in measured:
                    released.append(key)
                    s.execute(delete(Claim).where(Claim.study_key == self.study_key,
                                                  Claim.config_key == key,
                                                  Claim.worker == worker))
            s.commit()
        return released

    def close(self) -> None:
        self.engine.dispose()


def retry_stale(url: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Optuna's stale-trial callback for shared databases: release the dead worker's claim,
    then queue the trial again (at most three times).

    The retry starts without the dead trial's user attributes. Optuna copies them, but they
    belong to that run (its worker, its claim, and its whole result when the worker died
    between storing ``status`` and telling the study): a copy that dies in turn would read as a
    second measurement of the config."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        key, worker = trial.user_attrs.get("config_key"), trial.user_attrs.get("worker")
        if key is not None and worker is not None:
            claims = Claims(url, str(study.user_attrs.get("key")), 0, str(worker))
            with Session(claims.engine) as s:
                measured = s.get(Measurement, str(key)) is not None
            if not measured:  # died mid-measurement: the slot is free again
                claims.release(str(key))  # (measured: the retry is answered from the cache)
            claims.close()
        fresh = copy.deepcopy(trial)
        fresh.user_attrs = {}
        retry(study, fresh)
    return callback
