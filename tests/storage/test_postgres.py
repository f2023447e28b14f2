"""Several workers on one PostgreSQL database (a real server, see conftest)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from sqlalchemy import create_engine, make_url, text

pytestmark = pytest.mark.postgres
BUDGET = 8


def _worker_of_measuring_trial(url: str) -> list[str]:
    """Workers of RUNNING trials that have claimed their config (so they measure it)."""
    with create_engine(url).connect() as c:
        if not c.execute(text("select to_regclass('trial_user_attributes')")).scalar():
            return []  # the workers have not created the tables yet
        rows = c.execute(text(
            "select a.value_json from trials t join trial_user_attributes a "
            "on a.trial_id = t.trial_id where t.state = 'RUNNING' and a.key = 'worker' "
            "and exists (select 1 from trial_user_attributes k where k.trial_id = t.trial_id "
            "and k.key = 'config_key')"))
        return [str(r[0]) for r in rows]


def test_three_workers_share_the_budget_and_survive_a_sigkill(
        pg_url: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    cmd = [sys.executable, "-m", "autotune.cli", "search", "--model", str(tiny_model_dir),
           "--batch-sizes", "2", "--seq-lens", "8", "--ops", "pooler,ffn_up", "--trials",
           str(BUDGET), "--time-per-trial", "0.5", "--compose-trials", "0", "--heartbeat",
           "1", "--storage", pg_url]
    procs = [subprocess.Popen([*cmd, "--output", str(tmp_path / f"w{i}.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(3)]  # all three start at once: tables and studies race
    victim = procs[0]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and victim.poll() is None:
        if any(f":{victim.pid}" in w for w in _worker_of_measuring_trial(pg_url)):
            break
        time.sleep(0.1)
    assert victim.poll() is None, victim.communicate()[0]
    victim.send_signal(signal.SIGKILL)  # mid-trial: no handler, no cleanup
    victim.wait()
    password = make_url(pg_url).password
    assert password
    for p in procs[1:]:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
        assert "Traceback" not in out
        assert password not in out and "***" in out  # the log shows the URL redacted
    for f in tmp_path.glob("w*.json"):
        assert password not in f.read_text()
    page = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "autotune.cli", "report", "--storage", pg_url,
                        "--no-measure-peaks", "--output", str(page)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert password not in page.read_text() + r.stdout + r.stderr

    storage = optuna.storages.RDBStorage(pg_url)
    studies = storage.get_all_studies()
    assert len(studies) == 2
    with create_engine(pg_url).connect() as c:
        cached = {str(k): int(n) for k, n in c.execute(text(
            "select study_key, count(*) from autotune_measurements_v1 group by study_key"))}
        claimed = {str(k): int(n) for k, n in c.execute(text(
            "select study_key, count(*) from autotune_claims_v1 group by study_key"))}
    killed_any = False
    for fs in studies:
        trials = storage.get_all_trials(fs._study_id)
        assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        finished = [t for t in trials if "status" in t.user_attrs and t.state in (
            optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]
        key = fs.user_attrs["key"]
        # exactly the budget of configs was measured and stored, each once ...
        assert cached[key] == BUDGET and claimed[key] == BUDGET
        assert len({repr(sorted(t.params.items())) for t in finished}) == BUDGET
        measured = [repr(sorted(t.params.items())) for t in finished
                    if not t.user_attrs.get("cached")]
        assert len(measured) == len(set(measured)), Counter(measured)  # ... none twice
        stale = [t for t in trials if t.state == optuna.trial.TrialState.FAIL
                 and "status" not in t.user_attrs and f":{victim.pid}" in
                 str(t.user_attrs.get("worker"))]
        for t in stale:  # the killed trial is failed, and retried by a survivor
            killed_any = True
            retries = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
            assert retries and retries[-1].state == optuna.trial.TrialState.COMPLETE
            assert retries[-1].params == t.params
            assert repr(sorted(t.params.items())) in {
                repr(sorted(f.params.items())) for f in finished}
    assert killed_any, "the victim's trial was not found failed"


def test_unreachable_server_is_one_line_without_the_password(tmp_path: Path,
                                                            tiny_model_dir: Path) -> None:
    url = "postgresql+psycopg://autotune:topsecret@127.0.0.1:1/nothing"
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "search", "--model",
                           str(tiny_model_dir), "--seq-lens", "8", "--storage", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot open storage" in err[0] and "***" in err[0]
    assert "topsecret" not in proc.stderr + proc.stdout
