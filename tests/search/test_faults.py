"""Faults on the embedded SQLite default: one writer at a time, and a killed run loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
from sqlalchemy import create_engine, text

from tests.search.test_interrupt import _complete, _search_cmd


def _states(db: Path) -> dict[str, int]:
    with create_engine(f"sqlite:///{db}").connect() as c:
        return {str(s): int(n) for s, n in c.execute(
            text("select state, count(*) from trials group by state"))}


def _start(tiny_model_dir: Path, db: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _search_cmd(tiny_model_dir, db, out, "--ops", "ffn_up", "--compose-trials", "0",
                    *extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_trials(proc: subprocess.Popen[str], db: Path, n: int) -> None:
    deadline = time.monotonic() + 120
    while _complete(db) < n and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]


def test_second_search_on_the_same_sqlite_file_is_refused(tmp_path: Path,
                                                          tiny_model_dir: Path) -> None:
    db = tmp_path / "at.sqlite3"
    first = _start(tiny_model_dir, db, tmp_path / "a.json", "--trials", "400",
                   "--time-per-trial", "0.3")
    try:
        _wait_for_trials(first, db, 2)
        # Paused (it keeps its lock), the first search cannot start or finish a trial while
        # the trial states are compared: only the second one could change them.
        first.send_signal(signal.SIGSTOP)
        before = _states(db)
        second = subprocess.run(_search_cmd(tiny_model_dir, db, tmp_path / "b.json",
                                            "--ops", "ffn_up"),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        msg = second.stderr.strip().splitlines()
        assert len(msg) == 1 and "another autotune search (pid" in msg[0]
        assert "--wait" in msg[0] and "Traceback" not in second.stderr
        assert _states(db).get("RUNNING", 0) <= before.get("RUNNING", 0)  # no zombie added
        assert not (tmp_path / "b.json").exists()
    finally:
        first.send_signal(signal.SIGCONT)
        first.kill()
        first.communicate()


def test_wait_queues_behind_the_running_search(tmp_path: Path, tiny_model_dir: Path) -> None:
    db = tmp_path / "at.sqlite3"
    first = _start(tiny_model_dir, db, tmp_path / "a.json", "--trials", "400",
                   "--time-per-trial", "0.3")
    _wait_for_trials(first, db, 2)
    second = _start(tiny_model_dir, db, tmp_path / "b.json", "--trials", "3", "--wait",
                    "--ops", "pooler")
    assert second.stdout is not None
    seen = []  # read until it says it waits: interrupting the first any earlier would race it
    for line in second.stdout:
        seen.append(line)
        if "waiting for the autotune search (pid" in line:
            break
    assert second.poll() is None, "".join(seen)  # queued, not failed
    os.kill(first.pid, signal.SIGINT)
    assert first.wait(timeout=120) == 130
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, "".join(seen) + output
    assert (tmp_path / "b.json").exists()


def test_sigkill_then_rerun_marks_the_stale_trial_failed_and_resumes(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    db, out = tmp_path / "at.sqlite3", tmp_path / "tuned.json"
    proc = _start(tiny_model_dir, db, out, "--trials", "8", "--time-per-trial", "1.0")
    _wait_for_trials(proc, db, 3)
    deadline = time.monotonic() + 60  # into a trial's measurement (not between two trials)
    while _states(db).get("RUNNING", 0) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    killed = _states(db)
    completed = killed.get("COMPLETE", 0)
    assert killed.get("RUNNING", 0) == 1 and completed >= 3
    rerun = subprocess.run(_search_cmd(tiny_model_dir, db, out, "--ops", "ffn_up",
                                       "--compose-trials", "0", "--trials", "8",
                                       "--time-per-trial", "0.05"),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    (study,) = storage.get_all_studies()
    trials = storage.get_all_trials(study._study_id)
    states = [t.state for t in trials]
    assert optuna.trial.TrialState.RUNNING not in states
    stale = [t for t in trials if t.user_attrs.get("reason") == "stale: run was killed"]
    assert len(stale) == 1 and stale[0].state == optuna.trial.TrialState.FAIL
    assert states.count(optuna.trial.TrialState.COMPLETE) >= completed  # nothing lost
    done = {repr(sorted(t.params.items())) for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(done | {repr(sorted(stale[0].params.items()))}) >= 8  # the budget is met
