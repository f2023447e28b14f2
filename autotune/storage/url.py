"""Storage URLs: checked, made ready (SQLite folder), redacted for messages, opened."""

from __future__ import annotations

import sqlite3
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from autotune.errors import UserError

if TYPE_CHECKING:
    import optuna


def redact(url: str) -> str:
    """The URL with any password replaced, for logs, errors and reports."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable storage URL>"


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL (None for other databases and in-memory)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def prepare_url(url: str) -> str:
    """Check ``url``; for SQLite create the folder and check an existing file is a database."""
    try:
        make_url(url)
    except ArgumentError:
        raise UserError(f"storage URL {redact(url)!r} is not a database URL "
                        "(e.g. sqlite:///db/autotune.sqlite3)") from None
    path = sqlite_path(url)
    if path is None:
        return url
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise UserError(f"{path}: exists but is not an SQLite database")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
                con.execute("PRAGMA schema_version").fetchone()
        except sqlite3.DatabaseError as e:
            raise UserError(f"{path}: corrupted SQLite database ({e})") from None
    return url


def engine_kwargs(url: str) -> dict[str, object]:
    if make_url(url).get_backend_name() == "sqlite":
        # Wait for a lock instead of failing at once when another connection writes.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


HEARTBEAT_S = 10  # shared databases: a worker's trial is stale after 3 missed heartbeats


def open_optuna_storage(url: str, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``url``. On a shared database (anything but SQLite) trials send
    heartbeats; a trial whose worker died is failed after three missed beats, its claim is
    released and it is queued again (see ``claims``)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

    # heartbeats, stale-trial retry and fail_stale_trials are marked experimental in Optuna
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell trials send their heartbeats through storage.liveness, which Optuna cannot see
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs(url)}
    if make_url(url).get_backend_name() != "sqlite":
        from autotune.storage.claims import retry_stale

        beat = heartbeat or HEARTBEAT_S
        kwargs.update(heartbeat_interval=beat, grace_period=3 * beat,
                      heartbeat_stale_trial_callback=retry_stale(url))
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, ProgrammingError):
            if attempt == 4:  # several workers creating the tables at once: the loser retries
                raise UserError(f"cannot open storage {redact(url)}: tables could not be "
                                "created") from None
            time.sleep(0.2 * (attempt + 1))
        except OperationalError as e:
            raise UserError(f"cannot open storage {redact(url)}: "
                            f"{str(e.orig).strip().splitlines()[0]}") from None
        except SQLAlchemyError as e:
            raise UserError(f"cannot open storage {redact(url)}: {type(e).__name__}") from None
        except ImportError as e:
            hint = " (pip install 'autotune[postgres]')" if e.name == "psycopg" else ""
            raise UserError(f"cannot open storage {redact(url)}: missing driver "
                            f"({e.name}){hint}") from None
    raise AssertionError("unreachable")
