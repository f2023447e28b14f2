"""Which RUNNING trials of a shared study will never finish, and failing them so that they are
retried.

Optuna fails a trial whose heartbeat went stale (``fail_stale_trials``), but a trial that never
sent a heartbeat is never stale to it: a worker killed between ``study.ask()`` and its first
heartbeat leaves a RUNNING trial that every other worker would wait on forever. Here a trial is
marked as soon as its first heartbeat is stored, and a RUNNING trial that this worker has seen
unmarked for longer than the grace period is failed the same way a stale one is (its claim
released, the trial queued again by the storage's stale-trial callback). A live worker marks its
trial within milliseconds of asking for it; the time is measured on this worker's own clock, so
machines whose clocks disagree do not fail each other's trials.
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

#: User attribute holding the trial's own number once its heartbeat runs. A number, not a flag:
#: a retried trial starts with a copy of its failed original's user attributes.
MARK = "heartbeat_trial"
WORKER = "worker"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def marked(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get(MARK) == trial.number


class Liveness:
    """Heartbeats for this worker's trials of ``study`` and the failing of dead workers'
    trials. Does nothing on a storage without heartbeats (SQLite: one writer)."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        self.study = study
        self.storage = storage if isinstance(storage, RDBStorage) else None
        interval = None if self.storage is None else self.storage.get_heartbeat_interval()
        self.enabled = interval is not None
        self.interval = float(interval or 0)
        grace = None if self.storage is None else self.storage.grace_period
        self.grace = float(grace or 2 * self.interval)  # Optuna's default when none is set
        self.worker = worker_id()
        self._unmarked_since: dict[int, float] = {}
        self._study_id: int | None = None

    def _trial_id(self, number: int) -> int:
        assert self.storage is not None
        if self._study_id is None:
            self._study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    @contextmanager
    def running(self, trial: optuna.Trial) -> Iterator[bool]:
        """Send heartbeats for ``trial`` while the block runs. Yields False when the trial was
        already failed by another worker (this one stalled past the grace period before its
        first heartbeat): the caller skips it, its retry is queued."""
        if not self.enabled:
            yield True
            return
        assert self.storage is not None
        trial_id = self._trial_id(trial.number)
        try:
            # The first beat is stored before the mark: a marked trial always has a heartbeat
            # that can go stale, an unmarked one is failed by the rule above.
            self.storage.record_heartbeat(trial_id)
            trial.set_user_attr(WORKER, self.worker)
            trial.set_user_attr(MARK, trial.number)
        except UpdateFinishedTrialError:
            yield False
            return
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(trial_id, stop), daemon=True,
                                name=f"heartbeat-{trial.number}")
        beat.start()
        try:
            yield True
        finally:
            stop.set()
            beat.join()

    def _beat(self, trial_id: int, stop: threading.Event) -> None:
        assert self.storage is not None
        while not stop.wait(self.interval):
            with suppress(SQLAlchemyError):  # a dropped connection: the next beat tries again
                self.storage.record_heartbeat(trial_id)

    def fail_dead(self) -> list[int]:
        """Fail the RUNNING trials whose worker is gone: a stale heartbeat (Optuna's rule), or
        no heartbeat for longer than the grace period. Returns the numbers failed here."""
        if not self.enabled:
            return []
        assert self.storage is not None
        fail_stale_trials(self.study)
        now = time.monotonic()
        unmarked = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if not marked(t)]
        self._unmarked_since = {t.number: self._unmarked_since.get(t.number, now)
                                for t in unmarked}
        failed = []
        for t in unmarked:
            if now - self._unmarked_since[t.number] <= self.grace:
                continue
            trial_id = self._trial_id(t.number)
            try:
                self.storage.set_trial_user_attr(
                    trial_id, "reason", "stale: worker died before its first heartbeat")
                if not self.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                    continue
            except UpdateFinishedTrialError:  # its worker, or another one, got there first
                continue
            failed.append(t.number)
            callback = self.storage.get_heartbeat_stale_trial_callback()
            if callback is not None:
                callback(self.study, copy.deepcopy(self.storage.get_trial(trial_id)))
        return failed
