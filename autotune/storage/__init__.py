"""Where trials live: Optuna's RDB storage plus autotune's own tables, in one database."""

from __future__ import annotations

from autotune.storage.cache import MeasurementCache
from autotune.storage.url import open_optuna_storage, prepare_url, redact

__all__ = ["MeasurementCache", "open_optuna_storage", "prepare_url", "redact"]
