"""Soak: workers sharing a PostgreSQL study are SIGKILLed again and again, at random moments
and right after asking for a trial (before its first heartbeat); every study still ends with
exactly its budget measured once, nothing RUNNING, and no worker hung (see ``soak``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.storage.soak import NO_HEARTBEAT, Soak, run

pytestmark = pytest.mark.postgres


def test_repeated_sigkills_never_hang_a_shared_study(pg_url: str, tmp_path: Path,
                                                     tiny_model_dir: Path) -> None:
    out = run(Soak(pg_url, tiny_model_dir, tmp_path, kill_s=60.0))
    print(f"{out.kills} kills, {out.died} of {out.started} workers died, {out.wall_s:.0f} s; "
          f"trials failed by their worker's death: {dict(out.failed_by_death)}")
    assert not out.hung, out.hung[0]
    assert not out.bad_exits, out.bad_exits[0]
    assert not out.problems, out.problems
    assert out.kills + out.died > 5
    # the window this test is about was hit: trials failed that never sent a heartbeat
    assert out.failed_by_death[NO_HEARTBEAT] > 0, out.failed_by_death
