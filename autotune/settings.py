"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORAGE = "sqlite:///db/autotune.sqlite3"
#: ``<device>/<kind>.yaml`` search spaces; shipped in the package because the runtime checks
#: loaded configs against them (``search_spaces/`` at the top of the repository links here).
DEFAULT_SPACES_DIR = Path(__file__).resolve().parent / "search_spaces"


def storage_url(cli_value: str | None) -> str:
    """``--storage`` wins over ``AUTOTUNE_STORAGE``, which wins over the SQLite default."""
    return cli_value or os.environ.get("AUTOTUNE_STORAGE") or DEFAULT_STORAGE


def spaces_dir(cli_value: str | None) -> Path:
    return Path(cli_value or os.environ.get("AUTOTUNE_SPACES") or DEFAULT_SPACES_DIR)
