"""Ctrl-C and --timeout end a search cleanly: nothing RUNNING, a summary, an export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from sqlalchemy import create_engine, text

from autotune.settings import DEFAULT_SPACES_DIR


def _search_cmd(model_dir: Path, db: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autotune.cli", "search", "--model", str(model_dir),
            "--batch-sizes", "2", "--seq-lens", "8", "--storage", f"sqlite:///{db}",
            "--spaces", str(DEFAULT_SPACES_DIR), "--output", str(out), *extra]


def _complete(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with create_engine(f"sqlite:///{db}").connect() as c:
            return int(c.execute(text("select count(*) from trials where state = 'COMPLETE'"))
                       .scalar_one())
    except Exception:
        return 0


def test_sigint_closes_the_trial_summarises_and_exports(tmp_path: Path,
                                                        tiny_model_dir: Path) -> None:
    db, out = tmp_path / "at.sqlite3", tmp_path / "tuned.json"
    proc = subprocess.Popen(
        _search_cmd(tiny_model_dir, db, out, "--ops", "ffn_up", "--trials", "400",
                    "--time-per-trial", "0.3"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while _complete(db) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "per-operator results" in output
    assert "Traceback" not in output
    config = json.loads(out.read_text())
    assert config["ops"]["ffn_up"][0]["latency_ms"] > 0, output
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    (study,) = storage.get_all_studies()
    states = [t.state for t in storage.get_all_trials(study._study_id)]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3


def test_timeout_stops_starting_trials(tmp_path: Path, tiny_model_dir: Path) -> None:
    db, out = tmp_path / "at.sqlite3", tmp_path / "tuned.json"
    start = time.monotonic()
    proc = subprocess.run(
        _search_cmd(tiny_model_dir, db, out, "--ops", "ffn_up,ffn_down", "--trials", "400",
                    "--time-per-trial", "0.2", "--timeout", "4"),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 120
    assert "--timeout reached" in proc.stderr
    assert _complete(db) < 400
    assert json.loads(out.read_text())["ops"]["ffn_up"]
