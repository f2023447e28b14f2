"""Benchmark results, kept in the study database for the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from autotune.storage.cache import Base, open_engine
from autotune.storage.url import prepare_url


class BenchResult(Base):
    __tablename__ = "autotune_bench_v1"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(512), index=True)
    machine: Mapped[str] = mapped_column(String(32))
    bucket: Mapped[str] = mapped_column(String(64))
    lengths: Mapped[str] = mapped_column(String(256))
    peer: Mapped[str] = mapped_column(String(64))
    median_ms: Mapped[float] = mapped_column(Float)
    iqr_ms: Mapped[float] = mapped_column(Float)
    rel_error: Mapped[float] = mapped_column(Float)
    row: Mapped[str] = mapped_column(Text)  # the whole JSON row, for the report


def store_bench(url: str, result: dict[str, Any]) -> int:
    engine = open_engine(prepare_url(url))
    now = datetime.now(UTC)
    with Session(engine) as s:
        for r in result["rows"]:
            s.add(BenchResult(created=now, model=result["model"],
                              machine=result["machine"]["fingerprint"], bucket=r["bucket"],
                              lengths=result["lengths"], peer=r["peer"],
                              median_ms=r["median_ms"], iqr_ms=r["iqr_ms"],
                              rel_error=r["rel_error"],
                              row=json.dumps({**r, "max_rel_error": result.get("max_rel_error")})))
        s.commit()
    engine.dispose()
    return len(result["rows"])


def latest_bench(url: str, model: str, machine: str,
                 ) -> tuple[datetime, list[dict[str, Any]]] | None:
    """The rows of the newest ``autotune bench`` run of ``model`` on ``machine``, if any."""
    engine = open_engine(prepare_url(url))
    with Session(engine) as s:
        newest = s.scalars(select(BenchResult.created).where(
            BenchResult.model == model, BenchResult.machine == machine)
            .order_by(BenchResult.id.desc()).limit(1)).first()
        rows = [] if newest is None else [
            {**json.loads(r.row), "lengths": r.lengths} for r in s.scalars(
                select(BenchResult).where(BenchResult.model == model,
                                          BenchResult.machine == machine,
                                          BenchResult.created == newest)
                .order_by(BenchResult.id))]
    engine.dispose()
    return None if newest is None else (newest, rows)
