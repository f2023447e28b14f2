"""The machine's measured compute and bandwidth ceilings, stored once per machine and torch
version (the roofline of the report is drawn under them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from autotune.storage.cache import Base, open_engine


class MachinePeaks(Base):
    __tablename__ = "autotune_peaks_v1"

    machine: Mapped[str] = mapped_column(String(32), primary_key=True)
    torch: Mapped[str] = mapped_column(String(64), primary_key=True)
    measured: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    peaks: Mapped[str] = mapped_column(Text)  # JSON: {"gflops": {precision: x}, "gbps": y}


def load_peaks(url: str, machine: str, torch_version: str) -> dict[str, Any] | None:
    engine = open_engine(url)
    with Session(engine) as s:
        row = s.get(MachinePeaks, (machine, torch_version))
        out = None if row is None else json.loads(row.peaks)
    engine.dispose()
    return out


def store_peaks(url: str, machine: str, torch_version: str, peaks: dict[str, Any]) -> None:
    engine = open_engine(url)
    with Session(engine) as s:
        s.merge(MachinePeaks(machine=machine, torch=torch_version, measured=datetime.now(UTC),
                             peaks=json.dumps(peaks)))
        s.commit()
    engine.dispose()
