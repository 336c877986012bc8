"""Trading calendar (installation reference data, seeded by the initial migration; admin-editable).

All times are IST wall-clock times (``datetime.time`` without zone); dates are IST calendar dates.
"""

from __future__ import annotations

import datetime as dt
from datetime import time
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Time,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from algomirror.db.base import Base, CreatedAtMixin


class TradingHoursTemplate(CreatedAtMixin, Base):
    """A market's regular hours (equity, commodity, currency) and the exchanges it applies to."""

    __tablename__ = "trading_hours_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), nullable=False, unique=True)
    market_open: Mapped[time] = mapped_column(Time, nullable=False)
    market_close: Mapped[time] = mapped_column(Time, nullable=False)
    pre_open_start: Mapped[time | None] = mapped_column(Time)
    pre_open_end: Mapped[time | None] = mapped_column(Time)
    # Ours: OpenAlgo exchange codes governed by this template, e.g. ["NSE", "BSE", "NFO", "BFO"].
    markets: Mapped[list[str] | None] = mapped_column(JSON)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)

    sessions: Mapped[list[TradingSession]] = relationship(
        back_populates="template",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="TradingSession.day_of_week",
    )


class TradingSession(Base):
    """Hours of one weekday (0 = Monday … 6 = Sunday) under a template (older seed ``trading_sessions``)."""

    __tablename__ = "trading_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    template_id: Mapped[int] = mapped_column(
        ForeignKey("trading_hours_templates.id", ondelete="CASCADE"), nullable=False, index=True
    )
    day_of_week: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    pre_market_start: Mapped[time | None] = mapped_column(Time)
    pre_market_end: Mapped[time | None] = mapped_column(Time)
    market_open: Mapped[time | None] = mapped_column(Time)
    market_close: Mapped[time | None] = mapped_column(Time)
    post_market_start: Mapped[time | None] = mapped_column(Time)
    post_market_end: Mapped[time | None] = mapped_column(Time)
    is_trading_day: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)

    template: Mapped[TradingHoursTemplate] = relationship(back_populates="sessions")

    __table_args__ = (
        UniqueConstraint("template_id", "day_of_week"),
        CheckConstraint("day_of_week BETWEEN 0 AND 6", name="day_of_week_range"),
        CheckConstraint(
            "NOT is_trading_day OR (market_open IS NOT NULL AND market_close IS NOT NULL"
            " AND market_open < market_close)",
            name="trading_day_has_hours",
        ),
    )


class MarketHoliday(Base):
    """A trading holiday of one exchange: one row per (date, market). NSE and BSE lists can differ."""

    __tablename__ = "market_holidays"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    name: Mapped[str | None] = mapped_column(String(100))
    # OpenAlgo exchange code: NSE, BSE, NFO, BFO, MCX, CDS, ...
    market: Mapped[str] = mapped_column(String(10), nullable=False)

    __table_args__ = (
        UniqueConstraint("date", "market"),
        Index("idx_holiday_date", "date"),
    )


class SpecialTradingSession(Base):
    """A one-off session (Muhurat, budget Saturday) that opens ``markets`` for its window, even on a
    holiday."""

    __tablename__ = "special_trading_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    name: Mapped[str | None] = mapped_column(String(100))
    market_open: Mapped[time] = mapped_column(Time, nullable=False)
    market_close: Mapped[time] = mapped_column(Time, nullable=False)
    # OpenAlgo exchange codes this session opens, e.g. ["NSE", "BSE", "NFO", "BFO"].
    markets: Mapped[list[Any] | None] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("date", "name"),
        Index("idx_special_session_date", "date"),
        CheckConstraint("market_open < market_close", name="open_before_close"),
    )
