"""One row per ``autotune search`` invocation: what was asked and how long it took, so the
report can state the budget and the wall time of the search behind the numbers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from autotune.storage.cache import Base, open_engine


class SearchRun(Base):
    __tablename__ = "autotune_runs_v1"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(512), index=True)
    device: Mapped[str] = mapped_column(String(16))
    machine: Mapped[str] = mapped_column(String(32))
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    wall_s: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # finished | interrupted | failed
    options: Mapped[str] = mapped_column(Text)  # JSON: trials, sampler, tolerance, buckets, ...


def record_run(url: str, model: str, device: str, machine: str, started: datetime,
               wall_s: float, status: str, options: dict[str, Any]) -> None:
    engine = open_engine(url)
    with Session(engine) as s:
        s.add(SearchRun(model=model, device=device, machine=machine, started=started,
                        wall_s=wall_s, status=status,
                        options=json.dumps(options, sort_keys=True, default=str)))
        s.commit()
    engine.dispose()


def search_runs(url: str, model: str, device: str, machine: str) -> list[dict[str, Any]]:
    """Every recorded run of this model on this device and machine, oldest first."""
    engine = open_engine(url)
    with Session(engine) as s:
        rows = s.scalars(select(SearchRun).where(
            SearchRun.model == model, SearchRun.device == device,
            SearchRun.machine == machine).order_by(SearchRun.id)).all()
        out = [{"started": r.started, "wall_s": r.wall_s, "status": r.status,
                **json.loads(r.options)} for r in rows]
    engine.dispose()
    return out
