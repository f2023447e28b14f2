"""`autotune search` that may die right after asking for a trial.

With probability $AUTOTUNE_DIE_AFTER_ASK (seeded by the process id) the process SIGKILLs itself
as soon as `study.ask()` returns: the trial is RUNNING and has no heartbeat yet, the moment a
kill from outside hits only by chance.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from typing import Any

import optuna

from autotune.cli import main

_ask = optuna.Study.ask
_die = float(os.environ.get("AUTOTUNE_DIE_AFTER_ASK", "0"))
_rng = random.Random(os.getpid())


def _dying_ask(self: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
    trial = _ask(self, *args, **kwargs)
    if _rng.random() < _die:
        os.kill(os.getpid(), signal.SIGKILL)
    return trial


if __name__ == "__main__":
    optuna.Study.ask = _dying_ask  # type: ignore[method-assign]
    sys.exit(main(prog_name="autotune"))
