"""What is sent to the worker and what comes back: plain data, picklable and JSON-able."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from autotune.space import Value


class Status(StrEnum):
    """How a measurement ended; stored as its string value (in trials, cache and landscapes)."""

    OK = "ok"  # measured (feasibility is judged by the search against its tolerance)
    ERROR = "error"  # the variant failed to build or run
    WRONG = "wrong"  # non-finite or mis-shaped output
    TIMEOUT = "timeout"  # the worker process was killed after the trial timeout
    CRASH = "crash"  # the worker process died
    INTERRUPTED = "interrupted"  # the user stopped the search (not a property of the config)


@dataclass(frozen=True)
class MeasureTask:
    arch: dict[str, Any]
    kind: str
    batch: int
    seq: int
    variant: str
    params: dict[str, Value]
    device: str = "cpu"
    copies: int = 1  # weight copies to rotate through (as many as the model has, capped)
    budget_s: float = 1.0  # time for the interleaved timing loop
    min_rounds: int = 5
    max_rounds: int = 200
    seed: int = 0
    #: Real weights and text: a checkpoint directory and token ids of real texts. The gate
    #: then also runs the config on the checkpoint's own weights of a few layers, fed the
    #: float32 model's activations at this op on those texts (outlier channels included),
    #: and the result's error is the larger of that and the synthetic check's.
    real_model: str | None = None
    real_texts: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class MeasureResult:
    status: Status
    reason: str = ""
    rel_error: float | None = None
    cand_ms: float | None = None
    cand_iqr_ms: float | None = None
    ref_ms: float | None = None
    ref_iqr_ms: float | None = None
    rounds: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.cand_ms is None or not self.ref_ms:
            return None
        return self.cand_ms / self.ref_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasureResult:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**{**fields, "status": Status(fields["status"])})
