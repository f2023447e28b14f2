"""autotune: search the fastest correct configuration of every BERT operator.

The public command is ``autotune`` (see ``autotune.cli``). Library users start at
``autotune.runtime`` for loading a tuned configuration.
"""

from __future__ import annotations

__version__ = "0.1.0"
SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "__version__", "apply", "load"]


def __getattr__(name: str) -> object:
    # ``autotune.load`` / ``autotune.apply`` without importing torch for ``import autotune``.
    if name in ("load", "apply"):
        from autotune import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")
