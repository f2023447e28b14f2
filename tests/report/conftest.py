from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.recorded import load

EVIL = 'bert<script>alert("x")</script>&co'


@pytest.fixture(scope="session")
def recorded_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The recorded database, loaded once per session; tests must not write to it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('recorded') / 'autotune.sqlite3'}"
    load(url)
    return url


@pytest.fixture(scope="session")
def evil_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The recording under a model name that is also an HTML payload."""
    url = f"sqlite:///{tmp_path_factory.mktemp('evil') / 'autotune.sqlite3'}"
    load(url, model=EVIL)
    return url


@pytest.fixture
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots): kept after the run."""
    d = Path(__file__).resolve().parents[2] / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d
