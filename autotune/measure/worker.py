"""An isolated worker process for measurements, with a per-task timeout.

A candidate that hangs is killed at its timeout; one that kills its process (segfault,
abort, OOM) is reported as a crash. Either way the worker is started again for the next task,
and the search goes on.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from types import TracebackType

from autotune.measure.result import MeasureResult, MeasureTask, Status

STARTUP_TIMEOUT_S = 180.0


def _serve(conn: Connection, preload: Sequence[str]) -> None:
    # Ctrl-C is the parent's to handle: it stops the search and then this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.simplefilter("ignore")
    # Keep the parent's terminal (progress bar) clean: compilers and libraries print here.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    for name in preload:  # extra variant modules, named in code by the caller (tests, plugins)
        importlib.import_module(name)
    from autotune.measure.run import measure

    try:
        conn.send("ready")
        while True:
            task = conn.recv()
            if task is None:
                return
            result = measure(task)
            conn.send(result.to_dict())
            if result.extra.get("restart_worker"):
                return  # a broken CUDA context: the parent starts a fresh process
    except (EOFError, ConnectionError):  # the search process is gone (killed): nobody to answer
        return


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code}"


class MeasureWorker:
    """Runs ``MeasureTask``s one at a time in a child process (spawned, so no forked state)."""

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.preload = tuple(preload)
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self.measured = 0  # tasks sent to the process (for tests and the summary)
        self.restarts = 0  # processes lost to a timeout or crash (each replaced on next use)

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child, self.preload), daemon=True,
                           name="autotune-measure")
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        # Start-up (importing torch) is not a candidate's time: wait for it before any task.
        try:
            ready = parent.poll(STARTUP_TIMEOUT_S) and parent.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._kill()
            raise RuntimeError("the measurement worker process failed to start")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def run(self, task: MeasureTask, timeout: float,
            should_stop: Callable[[], bool] | None = None) -> MeasureResult:
        """Measure ``task``; kill it after ``timeout`` s, or as soon as ``should_stop()``."""
        if self._proc is None or not self._proc.is_alive():
            self._kill()
            self._start()
        assert self._conn is not None and self._proc is not None
        self.measured += 1
        start = time.monotonic()
        try:
            self._conn.send(task)
            while not self._conn.poll(0.05):
                if not self._proc.is_alive():
                    break
                if time.monotonic() - start > timeout:
                    self._kill()
                    self.restarts += 1
                    return MeasureResult(Status.TIMEOUT, f"no result within {timeout:g} s")
                if should_stop is not None and should_stop():
                    self._kill()
                    return MeasureResult(Status.INTERRUPTED, "search interrupted by the user")
            result = MeasureResult.from_dict(self._conn.recv())
            if result.extra.get("restart_worker"):
                self._kill()
                self.restarts += 1
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self._proc.join(timeout=5)
            reason = _exit_reason(self._proc.exitcode)
            self._kill()
            self.restarts += 1
            return MeasureResult(Status.CRASH, reason)
        return result

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(None)
            self._proc.join(timeout=5)
        self._kill()

    def __enter__(self) -> MeasureWorker:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

