"""One writer per SQLite file (Optuna's documented limit for SQLite storage).

``autotune search`` holds an exclusive lock on ``<database>.lock`` while it runs. The kernel
drops the lock when the process ends, however it ends (SIGKILL included), so a lock is never
left behind. A second search on the same file gets a clear message, or waits with ``--wait``;
PostgreSQL URLs need no lock (many workers share one database).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from autotune.errors import UserError
from autotune.storage.url import sqlite_path


@contextmanager
def writer_lock(url: str, wait: bool = False,
                on_wait: Callable[[str], None] = lambda msg: None) -> Iterator[None]:
    path = sqlite_path(url)
    if path is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise UserError(
                    f"another autotune search (pid {holder}) is writing {path}; SQLite has one "
                    "writer. Wait for it, pass --wait to queue behind it, or share a "
                    "PostgreSQL database (--storage postgresql+psycopg://...) to run "
                    "several workers") from None
            on_wait(f"waiting for the autotune search (pid {holder}) that is writing {path}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
