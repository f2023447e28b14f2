"""Options shared by the ``autotune`` subcommands (kept here so that the modules that add
subcommands can use them without importing ``cli``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# A copy of ``search.samplers.SAMPLERS``: importing that module loads torch and optuna, which
# `autotune --help` should not wait for (a test keeps them equal).
SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes")
#: Seconds before a hanging measurement is abandoned (the CLI's default and the driver's).
TRIAL_TIMEOUT_S = 180.0


class FiniteFloat(click.FloatRange):
    """A float in a range that is a number: click's FloatRange lets NaN through (every
    comparison with NaN is false) and takes ±inf as a value."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def positive_float() -> FiniteFloat:
    return FiniteFloat(min=0, min_open=True)


def storage_option(fn: F) -> F:
    return click.option(
        "--storage", metavar="URL", default=None,
        help="Database URL (default: $AUTOTUNE_STORAGE or sqlite:///db/autotune.sqlite3).",
    )(fn)


def device_option(fn: F) -> F:
    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
                        show_default=True, help="Where to tune and run.")(fn)


def tolerance_option(help: str, default: float | None = 0.02) -> Callable[[F], F]:
    """``--max-rel-error``: a bound on ‖out−ref‖/‖ref‖ in (0, 1]; ``None`` defaults to the
    stored tolerance of whatever the command reads."""
    return click.option("--max-rel-error", type=FiniteFloat(min=0, min_open=True, max=1),
                        default=default, show_default=default is not None, help=help)
