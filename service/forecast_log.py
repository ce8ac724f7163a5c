"""The forecast log: every forecast the service makes, stored before it is answered.

SQLAlchemy over a SQLite file by default (WAL journal, so readers never block the writer and
an acknowledged forecast survives a killed process) or Postgres by URL. Each row keeps the
prompt options and hash, arm, adapter version, latencies and the parsed prediction; the scorer fills in
the realized return once the target week has closed, and :meth:`ForecastLog.scorecards`
aggregates realized binary accuracy and MSE (on bin midpoints, as ``forecast.metrics``) per
adapter version in SQL. The schema is managed by Alembic (:mod:`service.migrations`): opening
the log applies any migration the database lacks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    case,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from forecast.bins import Bin
from forecast.windows import WindowConfig
from service import migrations
from service.schemas import ForecastResponse
from service.settings import SHADOW_ARM


class Base(DeclarativeBase):
    pass


class ForecastRow(Base):
    __tablename__ = "forecasts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    route: Mapped[str] = mapped_column(String(16))
    ticker: Mapped[str] = mapped_column(String(16), index=True)
    as_of: Mapped[dt.date] = mapped_column(Date)
    target_end: Mapped[dt.date] = mapped_column(Date, index=True)
    adapter: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(128))
    base: Mapped[str] = mapped_column(String(32))
    base_model: Mapped[str] = mapped_column(Text)  # an HF id or a checkpoint path
    arm: Mapped[str] = mapped_column(String(128))  # an adapter name (manifest.SEGMENT)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_hash: Mapped[str] = mapped_column(String(64))  # see prompt_hash()
    # The prompt options (NULL on rows written before they existed).
    weeks: Mapped[int | None] = mapped_column(Integer)
    news_per_week: Mapped[int | None] = mapped_column(Integer)
    with_financials: Mapped[bool | None] = mapped_column(Boolean)
    raw_text: Mapped[str] = mapped_column(Text)
    prediction: Mapped[str | None] = mapped_column(String(4))
    predicted_up: Mapped[bool | None] = mapped_column(Boolean)
    predicted_mid: Mapped[float | None] = mapped_column(Float)
    prediction_source: Mapped[str | None] = mapped_column(String(8))  # line | prose | probe
    parse_error: Mapped[str | None] = mapped_column(Text)
    stale_sources: Mapped[str] = mapped_column(String(128), default="")
    prompt_build_s: Mapped[float | None] = mapped_column(Float)
    queue_s: Mapped[float | None] = mapped_column(Float)
    ttft_s: Mapped[float | None] = mapped_column(Float)
    generation_s: Mapped[float | None] = mapped_column(Float)
    total_s: Mapped[float | None] = mapped_column(Float)
    generated_tokens: Mapped[int] = mapped_column(Integer, default=0)
    finish_reason: Mapped[str | None] = mapped_column(String(16))  # NULL on older rows
    realized_return: Mapped[float | None] = mapped_column(Float)
    realized_bin: Mapped[str | None] = mapped_column(String(4))
    realized_up: Mapped[bool | None] = mapped_column(Boolean)
    realized_mid: Mapped[float | None] = mapped_column(Float)
    scored_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    @classmethod
    def of_response(cls, r: ForecastResponse, created_at: dt.datetime, prompt_hash: str) -> ForecastRow:
        """The row that stores the answered forecast ``r``."""
        name, _, version = r.adapter.partition("@")  # name@version; neither holds an "@"
        shadow = r.arm == SHADOW_ARM
        return cls(
            id=r.id, created_at=created_at, route="shadow" if shadow else "api",
            ticker=r.ticker, as_of=r.as_of, target_end=r.week_end, adapter=name,
            version=version, base=r.base, base_model=r.base_model, arm=r.arm, shadow=shadow,
            prompt_hash=prompt_hash, weeks=r.options.weeks,
            news_per_week=r.options.news_per_week, with_financials=r.options.with_financials,
            raw_text=r.raw_text, parse_error=r.parse_error,
            stale_sources=",".join(r.freshness.stale_sources),
            prompt_build_s=r.latency.prompt_build_s, queue_s=r.latency.queue_s,
            ttft_s=r.latency.ttft_s, generation_s=r.latency.generation_s,
            total_s=r.latency.total_s, generated_tokens=r.generated_tokens,
            finish_reason=r.finish_reason,
            **prediction_columns(
                Bin(r.prediction.bin) if r.prediction else None,
                r.prediction.source if r.prediction else None,
            ),
        )


@dataclass(frozen=True)
class Scorecard:
    adapter: str
    version: str | None  # None: all versions of the adapter together
    forecasts: int
    parsed: int  # bin read from the answer's own text
    scored: int
    binary_accuracy: float | None
    mse: float | None
    mean_latency_s: float | None
    mean_ttft_s: float | None
    tokens_per_s: float | None
    probed: int = 0  # bin chosen by the model after its cut-off answer
    mse_second_moment: float | None = None  # mean of the squared errors' squares (for mse_ci)

    @property
    def parse_failure_rate(self) -> float | None:
        return None if not self.forecasts else 1.0 - self.parsed / self.forecasts


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_db_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def new_id() -> str:
    return uuid.uuid4().hex


def prompt_hash(prompt: str, window: WindowConfig) -> str:
    """SHA-256 of the prompt options and the rendered prompt: two option sets never share a
    hash, even where they build the same text (no financials reported, weeks without news)."""
    options = (
        f"weeks={window.weeks};news_per_week={window.news_per_week};"
        f"with_financials={int(window.with_financials)}\n"
    )
    return hashlib.sha256((options + prompt).encode()).hexdigest()


class ForecastLog:
    """Synchronous and thread-safe; the app calls it from a worker thread."""

    def __init__(self, url: str) -> None:
        self.engine = make_db_engine(url)
        migrations.upgrade(self.engine)  # a new log gets head, an older one is brought to it

    def add(self, row: ForecastRow) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(row)

    def get(self, forecast_id: str) -> ForecastRow | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ForecastRow, forecast_id)

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(ForecastRow)) or 0)

    def pending_weeks(self, closed_on: dt.date) -> list[tuple[str, dt.date, dt.date]]:
        """(ticker, as_of, target_end) of unscored rows whose week closed by ``closed_on``."""
        query = (
            select(ForecastRow.ticker, ForecastRow.as_of, ForecastRow.target_end)
            .where(ForecastRow.realized_return.is_(None), ForecastRow.target_end <= closed_on)
            .distinct()
        )
        with Session(self.engine) as session:
            return [(t, a, e) for t, a, e in session.execute(query)]

    def set_realized(self, ticker: str, as_of: dt.date, ret: float, when: dt.datetime) -> int:
        from forecast.bins import bin_of_return

        realized = bin_of_return(ret)
        query = (
            update(ForecastRow)
            .where(
                ForecastRow.ticker == ticker,
                ForecastRow.as_of == as_of,
                ForecastRow.realized_return.is_(None),
            )
            .values(
                realized_return=ret, realized_bin=realized.value, realized_up=realized.is_up,
                realized_mid=realized.midpoint, scored_at=when,
            )
        )
        with Session(self.engine) as session, session.begin():
            return int(session.execute(query).rowcount)  # type: ignore[attr-defined]

    def scorecards(self, adapter: str | None = None) -> list[Scorecard]:
        """One card per adapter version, plus one per adapter over all its versions."""
        cards: list[Scorecard] = []
        for by_version in (True, False):
            cards.extend(self._aggregate(adapter, by_version))
        return sorted(cards, key=lambda c: (c.adapter, c.version is not None, c.version or ""))

    def _aggregate(self, adapter: str | None, by_version: bool) -> list[Scorecard]:
        r = ForecastRow
        scored = (r.prediction.is_not(None)) & (r.realized_return.is_not(None))
        hit = case((scored & (r.predicted_up == r.realized_up), 1.0), (scored, 0.0), else_=None)
        sq = case((scored, (r.predicted_mid - r.realized_mid) * (r.predicted_mid - r.realized_mid)))
        rate = case(((r.generation_s > 0), r.generated_tokens / r.generation_s))
        probed = case((r.prediction_source == "probe", 1), else_=0)
        keys = [r.adapter, r.version] if by_version else [r.adapter]
        query = select(
            *keys,
            func.count(),
            func.count(r.prediction),
            func.sum(probed),
            func.sum(case((scored, 1), else_=0)),
            func.avg(hit),
            func.avg(sq),
            func.avg(sq * sq),
            func.avg(r.total_s),
            func.avg(r.ttft_s),
            func.avg(rate),
        ).group_by(*keys)
        if adapter is not None:
            query = query.where(r.adapter == adapter)
        out = []
        with Session(self.engine) as session:
            for row in session.execute(query):
                name, version = (row[0], row[1]) if by_version else (row[0], None)
                n, predicted, n_probed, n_scored, acc, mse, mse_m2, lat, ttft, tps = row[-10:]
                out.append(Scorecard(
                    adapter=name, version=version, forecasts=int(n),
                    parsed=int(predicted) - int(n_probed or 0), probed=int(n_probed or 0),
                    scored=int(n_scored or 0), binary_accuracy=_f(acc), mse=_f(mse),
                    mse_second_moment=_f(mse_m2),
                    mean_latency_s=_f(lat), mean_ttft_s=_f(ttft), tokens_per_s=_f(tps),
                ))
        return out

    def close(self) -> None:
        self.engine.dispose()


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def prediction_columns(prediction: Bin | None, source: str | None = None) -> dict[str, Any]:
    if prediction is None:
        return {"prediction": None, "predicted_up": None, "predicted_mid": None,
                "prediction_source": None}
    return {
        "prediction": prediction.value,
        "predicted_up": prediction.is_up,
        "predicted_mid": prediction.midpoint,
        "prediction_source": source or "line",
    }
