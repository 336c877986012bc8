"""db/calendar_store.load_calendar on both databases: the seeded calendar answers like the built-in one,
and edits to holidays, special sessions and weekday sessions show up.

The calendar tables are reference data kept between PostgreSQL tests, so these tests never commit: the
``session`` fixture's rollback undoes their rows (load_calendar reads them through the same session).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.calendar_store import bump_calendar_revision, calendar_revision, load_calendar
from algomirror.db.models.calendar import (
    MarketHoliday,
    SpecialTradingSession,
    TradingHoursTemplate,
    TradingSession,
)
from algomirror.domain.calendar import default_calendar
from algomirror.domain.timeutil import IST


def ist(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=IST).astimezone(UTC)


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (ist(2026, 1, 26, 11, 0), False),  # Republic Day (holiday)
        (ist(2025, 10, 21, 13, 44, 59), False),  # Diwali: holiday ...
        (ist(2025, 10, 21, 13, 45), True),  # ... with the Muhurat special session
        (ist(2025, 10, 21, 14, 45), False),
        (ist(2026, 2, 1, 11, 0), False),  # Sunday
        (ist(2026, 2, 2, 9, 14, 59), False),  # a normal Monday: before the open
        (ist(2026, 2, 2, 9, 15), True),
        (ist(2026, 2, 2, 15, 29, 59), True),
        (ist(2026, 2, 2, 15, 30), False),  # the close is outside (half-open)
    ],
)
def test_load_calendar_when_seeded_answers_like_default_calendar_for_nse(
    session: Session, instant: datetime, expected: bool
) -> None:
    cal = load_calendar(session)
    for exchange in ("NSE", "NFO", "BSE", "BFO", "NSE_INDEX"):
        assert cal.is_open(exchange, instant) is expected
    assert default_calendar().is_open("NSE", instant) is expected


def test_load_calendar_when_seeded_matches_default_calendar_day_by_day(session: Session) -> None:
    cal = load_calendar(session)
    builtin = default_calendar()
    day = date(2025, 1, 1)
    while day <= date(2026, 12, 31):
        for exchange in ("NSE", "NFO", "MCX", "CDS"):
            assert cal.is_trading_day(exchange, day) == builtin.is_trading_day(exchange, day), (exchange, day)
            assert cal.sessions(exchange, day) == builtin.sessions(exchange, day), (exchange, day)
            assert cal.pre_open(exchange, day) == builtin.pre_open(exchange, day), (exchange, day)
        day += timedelta(days=1)
    assert cal.holiday_name("NSE", date(2026, 1, 26)) == "Republic Day"
    assert [h.day for h in cal.holidays(2026)] == [h.day for h in builtin.holidays(2026)]
    assert [s.day for s in cal.special_sessions()] == [date(2024, 11, 1), date(2025, 10, 21)]


def test_load_calendar_when_seeded_has_template_hours_and_pre_open(session: Session) -> None:
    cal = load_calendar(session)
    monday = date(2026, 2, 2)
    assert cal.pre_open("NSE", monday) == (ist(2026, 2, 2, 9, 0), ist(2026, 2, 2, 9, 8))
    assert cal.pre_open("MCX", monday) is None
    assert cal.is_open("MCX", ist(2026, 2, 2, 22, 0))
    assert not cal.is_open("NSE", ist(2026, 2, 2, 22, 0))
    assert cal.is_open("CDS", ist(2026, 2, 2, 16, 59))
    assert not cal.is_open("CDS", ist(2026, 2, 2, 17, 0))
    assert cal.next_session_end("MCX", ist(2026, 2, 2, 22, 0)) == ist(2026, 2, 2, 23, 30)
    # An exchange no template lists follows the equity week.
    assert cal.regular_hours("NCDEX") == {wd: (time(9, 15), time(15, 30)) for wd in range(5)}


def test_load_calendar_when_holiday_and_special_session_added_they_show_up(session: Session) -> None:
    session.add(MarketHoliday(date=date(2026, 2, 2), name="Ad-hoc closure", market="NSE"))
    # Markets NULL: the equity exchanges.
    session.add(
        SpecialTradingSession(
            date=date(2026, 2, 7), name="Budget Saturday", market_open=time(9, 15), market_close=time(15, 30)
        )
    )
    session.add(
        SpecialTradingSession(
            date=date(2026, 2, 8),
            name="MCX only",
            market_open=time(10, 0),
            market_close=time(11, 0),
            markets=["MCX"],
        )
    )
    session.flush()
    cal = load_calendar(session)
    assert not cal.is_open("NSE", ist(2026, 2, 2, 10, 0))
    assert cal.is_open("BSE", ist(2026, 2, 2, 10, 0))  # the holiday is NSE's only
    assert cal.holiday_name("NSE", date(2026, 2, 2)) == "Ad-hoc closure"
    for exchange in ("NSE", "BSE", "NFO", "BFO"):
        assert cal.is_open(exchange, ist(2026, 2, 7, 10, 0))
    assert not cal.is_trading_day("NSE", date(2026, 2, 7))
    assert cal.is_open("MCX", ist(2026, 2, 8, 10, 30))
    assert not cal.is_open("NSE", ist(2026, 2, 8, 10, 30))


def test_load_calendar_when_weekday_session_changed_or_closed_it_follows(session: Session) -> None:
    equity = session.scalars(select(TradingHoursTemplate).where(TradingHoursTemplate.name == "equity")).one()
    rows = {
        r.day_of_week: r
        for r in session.scalars(select(TradingSession).where(TradingSession.template_id == equity.id))
    }
    rows[0].market_open = time(10, 0)  # Monday opens late
    rows[4].is_trading_day = False  # Friday closed
    rows[4].market_open = rows[4].market_close = None
    session.flush()
    cal = load_calendar(session)
    assert not cal.is_open("NFO", ist(2026, 2, 2, 9, 30))
    assert cal.is_open("NFO", ist(2026, 2, 2, 10, 0))
    assert not cal.is_trading_day("NSE", date(2026, 2, 6))
    assert cal.previous_trading_day("NSE", date(2026, 2, 9)) == date(2026, 2, 5)
    # MCX has its own template, unchanged.
    assert cal.is_trading_day("MCX", date(2026, 2, 6))


def test_load_calendar_when_template_inactive_its_markets_follow_the_default_week(session: Session) -> None:
    commodity = session.scalars(
        select(TradingHoursTemplate).where(TradingHoursTemplate.name == "commodity")
    ).one()
    commodity.is_active = False
    session.flush()
    cal = load_calendar(session)
    assert not cal.is_open("MCX", ist(2026, 2, 2, 22, 0))
    assert cal.is_open("MCX", ist(2026, 2, 2, 10, 0))


def test_calendar_revision_when_bumped_moves_on(session: Session) -> None:
    before = calendar_revision(session)
    assert bump_calendar_revision(session) == before + 1
    session.flush()
    assert calendar_revision(session) == before + 1
