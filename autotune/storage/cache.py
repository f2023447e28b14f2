"""The measurement cache: one row per (measurement key, config), in the study database.

The key hashes everything that can invalidate a timing (see ``search.keys``), so a config
is measured once whichever sampler, run or worker proposes it again. The table name is
versioned: a change of the row format starts a new table instead of misreading old rows.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, String, Text, create_engine, select
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from autotune.measure.result import MeasureResult
from autotune.storage.url import engine_kwargs


class Base(DeclarativeBase):
    pass


def open_engine(url: str) -> Engine:
    """An engine on ``url`` with autotune's tables created (idempotent, and safe when several
    workers start at once: the loser of a creation race sees the tables on its retry)."""
    engine = create_engine(url, **engine_kwargs(url))
    for attempt in range(5):
        try:
            Base.metadata.create_all(engine, checkfirst=True)
            break
        except (IntegrityError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    return engine


class Measurement(Base):
    __tablename__ = "autotune_measurements_v1"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_key: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MeasurementCache:
    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)
        self.hits = 0

    def get(self, key: str) -> MeasureResult | None:
        with Session(self.engine) as s:
            row = s.get(Measurement, key)
            if row is None:
                return None
            self.hits += 1
            return MeasureResult.from_dict(json.loads(row.result))

    def put(self, key: str, study_key: str, params: dict[str, Any], result: MeasureResult) -> None:
        row = Measurement(key=key, study_key=study_key, params=json.dumps(params, sort_keys=True),
                          result=json.dumps(result.to_dict()), created=datetime.now(UTC))
        with Session(self.engine) as s:
            s.add(row)
            try:
                s.commit()
            except IntegrityError:  # another worker stored the same key first: keep theirs
                s.rollback()

    def count(self, study_key: str | None = None) -> int:
        with Session(self.engine) as s:
            q = select(Measurement.key)
            if study_key is not None:
                q = q.where(Measurement.study_key == study_key)
            return len(s.scalars(q).all())

    def close(self) -> None:
        self.engine.dispose()
