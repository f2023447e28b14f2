"""Workers sharing one PostgreSQL study, SIGKILLed again and again, then checked.

Used by ``test_soak.py`` at a small size; run it directly for the full scenario (four workers,
three op kinds of 24 trials, a kill every 15-25 s for 150 s):

    python tests/storage/soak.py --storage URL --seed 1
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from sqlalchemy import create_engine, text

DYING_WORKER = Path(__file__).with_name("dying_worker.py")
NO_HEARTBEAT = "stale: worker died before its first heartbeat"


@dataclass
class Soak:
    url: str
    model_dir: Path
    out_dir: Path
    ops: tuple[str, ...] = ("pooler", "ffn_up", "attn_out")
    budget: int = 6
    workers: int = 3
    kill_s: float = 60.0  # how long workers are killed
    interval: tuple[float, float] = (2.0, 6.0)  # seconds between kills, drawn uniformly
    die_after_ask: float = 0.15  # chance that a worker kills itself right after an ask
    seed: int = 0
    finish_timeout: float = 300.0  # after the kills, for every worker to end
    extra_args: tuple[str, ...] = ("--time-per-trial", "0.2", "--trial-timeout", "30",
                                   "--heartbeat", "1")


@dataclass
class Outcome:
    kills: int = 0
    started: int = 0
    died: int = 0  # SIGKILLed from outside or by themselves
    hung: list[str] = field(default_factory=list)  # logs of workers still alive at the end
    bad_exits: list[str] = field(default_factory=list)  # logs of workers that failed
    problems: list[str] = field(default_factory=list)  # what the database shows wrong
    failed_by_death: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.hung or self.bad_exits or self.problems)


def run(s: Soak) -> Outcome:
    cmd = [sys.executable, str(DYING_WORKER), "search", "--model", str(s.model_dir),
           "--batch-sizes", "2", "--seq-lens", "8", "--ops", ",".join(s.ops), "--trials",
           str(s.budget), "--compose-trials", "0", "--storage", s.url,
           "--output", str(s.out_dir / "tuned.json"), *s.extra_args]
    rng = random.Random(s.seed)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    out = Outcome()
    t0 = time.monotonic()

    def spawn(die_after_ask: float) -> None:
        log = s.out_dir / f"worker{len(procs)}.log"
        env = {**os.environ, "AUTOTUNE_DIE_AFTER_ASK": str(die_after_ask)}
        with log.open("wb") as f:
            procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env),
                          log))

    # The first worker dies at its first ask for sure (it is not killed from outside before),
    # so the window is hit in every run; the others die there by chance, replacements included.
    spawn(1.0 if s.die_after_ask > 0 else 0.0)
    sure = procs[0][0]
    for _ in range(s.workers - 1):
        spawn(s.die_after_ask)
    end = time.monotonic() + s.kill_s
    while time.monotonic() < end:
        time.sleep(rng.uniform(*s.interval))
        alive = [p for p, _ in procs if p.poll() is None and p is not sure]
        if alive:
            rng.choice(alive).send_signal(signal.SIGKILL)  # anywhere: no handler, no cleanup
            out.kills += 1
        for _ in range(s.workers - sum(p.poll() is None for p, _ in procs)):
            spawn(s.die_after_ask)  # killed from outside or by itself after an ask: replaced
    spawn(0.0)  # one that never dies finishes whatever is left
    deadline = time.monotonic() + s.finish_timeout
    for p, log in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            out.hung.append(log.read_text()[-3000:])
            p.kill()
            continue
        text_ = log.read_text()
        if p.returncode == -signal.SIGKILL:
            out.died += 1
        elif p.returncode != 0 or "Traceback" in text_ or "gave up" in text_:
            out.bad_exits.append(text_[-3000:])
    out.started, out.wall_s = len(procs), time.monotonic() - t0
    if procs[-1][0].returncode != 0:
        out.problems.append("the worker that never dies did not finish")
    check_database(s, out)
    return out


def check_database(s: Soak, out: Outcome) -> None:
    """Every study: nothing RUNNING, exactly the budget claimed and measured, none twice."""
    storage = optuna.storages.RDBStorage(s.url)
    studies = storage.get_all_studies()
    if len(studies) != len(s.ops):
        out.problems.append(f"{len(studies)} studies, expected {len(s.ops)}")
    engine = create_engine(s.url)
    with engine.connect() as c:
        cached = {str(k): int(n) for k, n in c.execute(text(
            "select study_key, count(*) from autotune_measurements_v1 group by study_key"))}
        claimed = {str(k): int(n) for k, n in c.execute(text(
            "select study_key, count(*) from autotune_claims_v1 group by study_key"))}
    engine.dispose()
    for fs in studies:
        trials = storage.get_all_trials(fs._study_id)
        name, key = fs.study_name, fs.user_attrs["key"]
        running = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if running:
            out.problems.append(f"{name}: trials {running} still RUNNING")
        if (cached.get(key), claimed.get(key)) != (s.budget, s.budget):
            out.problems.append(f"{name}: {cached.get(key)} measured, {claimed.get(key)} "
                                f"claimed, budget {s.budget}")
        finished = [t for t in trials if "status" in t.user_attrs and t.state in (
            optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]
        configs = {repr(sorted(t.params.items())) for t in finished}
        if len(configs) != s.budget:
            out.problems.append(f"{name}: {len(configs)} configs with a result")
        measured = Counter(repr(sorted(t.params.items())) for t in finished
                           if not t.user_attrs.get("cached"))
        twice = [c for c, n in measured.items() if n > 1]
        if twice:
            out.problems.append(f"{name}: measured twice: {twice}")
        out.failed_by_death.update(
            str(t.user_attrs.get("reason", "heartbeat stale")) for t in trials
            if t.state == optuna.trial.TrialState.FAIL and "status" not in t.user_attrs)
    storage.remove_session()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", required=True, help="PostgreSQL URL (its tables are dropped)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kill-seconds", type=float, default=150.0)
    ap.add_argument("--die-after-ask", type=float, default=0.0)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.conftest import write_tiny_model

    with create_engine(args.storage).begin() as c:
        c.execute(text("DROP SCHEMA public CASCADE"))
        c.execute(text("CREATE SCHEMA public"))
    with tempfile.TemporaryDirectory() as tmp:
        out = run(Soak(args.storage, write_tiny_model(Path(tmp) / "model"), Path(tmp),
                       ops=("ffn_up", "attn_out", "qkv_proj"), budget=24,
                       workers=args.workers, kill_s=args.kill_seconds, interval=(15.0, 25.0),
                       die_after_ask=args.die_after_ask, seed=args.seed,
                       finish_timeout=900.0, extra_args=()))
    print(f"seed {args.seed}: {out.kills} kills, {out.died} of {out.started} workers died, "
          f"{out.wall_s:.0f} s; failed by a worker's death: {dict(out.failed_by_death)}")
    for problem in out.problems + [f"hung: {h[-500:]}" for h in out.hung] + \
            [f"bad exit: {b[-500:]}" for b in out.bad_exits]:
        print(problem)
    print("OK" if out.ok else "FAILED")
    sys.exit(0 if out.ok else 1)


if __name__ == "__main__":
    main()
