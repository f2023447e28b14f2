"""The PostgreSQL server of the shared-study tests: `.ci/postgres.sh` installs and starts it on
loopback; the tests read its URL from AUTOTUNE_TEST_POSTGRES."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get("AUTOTUNE_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("AUTOTUNE_TEST_POSTGRES is not set; .ci/run starts the server")
        pytest.skip("no PostgreSQL server (bash .ci/postgres.sh prints a URL)")
    with create_engine(url).begin() as c:  # a clean database for each test
        c.execute(text("DROP SCHEMA public CASCADE"))
        c.execute(text("CREATE SCHEMA public"))
    return url
