"""Measurement: timing, the correctness gate and the isolated worker process.

Every outcome is data (``MeasureResult``); nothing here raises on a bad candidate.
"""

from __future__ import annotations

from autotune.measure.result import MeasureResult, MeasureTask, Status
from autotune.measure.timing import Stats, time_interleaved
from autotune.measure.worker import MeasureWorker

__all__ = ["MeasureResult", "MeasureTask", "MeasureWorker", "Stats", "Status", "time_interleaved"]
