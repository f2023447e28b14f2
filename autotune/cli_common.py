"""Options shared by the ``autotune`` subcommands (kept here so that the modules that add
subcommands can use them without importing ``cli``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def storage_option(fn: F) -> F:
    return click.option(
        "--storage", metavar="URL", default=None,
        help="Database URL (default: $AUTOTUNE_STORAGE or sqlite:///db/autotune.sqlite3).",
    )(fn)


def device_option(fn: F) -> F:
    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
                        show_default=True, help="Where to tune and run.")(fn)
