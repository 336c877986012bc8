from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from algomirror.domain.calendar import (
    SpecialSession,
    TradingCalendar,
    default_calendar,
    expiry_dates,
    is_expired,
)
from algomirror.domain.timeutil import IST, ist_combine


def ist(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=IST).astimezone(UTC)


CAL = default_calendar()


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (ist(2026, 2, 2, 9, 14, 59), False),
        (ist(2026, 2, 2, 9, 15), True),
        (ist(2026, 2, 2, 15, 29, 59), True),
        (ist(2026, 2, 2, 15, 30), False),
        (ist(2026, 2, 1, 11, 0), False),  # Sunday
        (ist(2026, 1, 26, 11, 0), False),  # Republic Day
        (ist(2025, 10, 21, 10, 0), False),  # Diwali: holiday ...
        (ist(2025, 10, 21, 13, 45), True),  # ... with the Muhurat session
        (ist(2025, 10, 21, 14, 45), False),
        (ist(2024, 11, 1, 18, 30), True),  # Muhurat 2024 18:00-19:00
    ],
)
def test_is_open_when_checked_at_instant_follows_sessions_holidays_and_specials(
    instant: datetime, expected: bool
) -> None:
    for exchange in ("NSE", "NFO", "BSE", "BFO", "NSE_INDEX", "BSE_INDEX"):
        assert CAL.is_open(exchange, instant) is expected


def test_is_open_when_holiday_only_for_one_exchange_other_stays_open() -> None:
    cal = TradingCalendar(holidays=[(date(2026, 2, 2), "BSE")])
    at = ist(2026, 2, 2, 10, 0)
    assert cal.is_open("NSE", at)
    assert not cal.is_open("BSE", at)
    assert not cal.is_open("BSE_INDEX", at)


def test_special_session_when_saturday_opens_only_listed_exchanges() -> None:
    cal = TradingCalendar(
        special_sessions=[SpecialSession(date(2025, 2, 1), time(9, 15), time(15, 30), frozenset({"NSE"}))]
    )
    assert cal.is_open("NSE", ist(2025, 2, 1, 10, 0))
    assert not cal.is_open("BSE", ist(2025, 2, 1, 10, 0))
    assert not cal.is_trading_day("NSE", date(2025, 2, 1))


def test_trading_day_when_muhurat_holiday_is_not_a_trading_day() -> None:
    assert not CAL.is_trading_day("NFO", date(2025, 10, 21))
    assert CAL.sessions("NFO", date(2025, 10, 21)) == [(ist(2025, 10, 21, 13, 45), ist(2025, 10, 21, 14, 45))]
    assert CAL.previous_trading_day("NFO", date(2025, 10, 23)) == date(2025, 10, 20)
    assert CAL.next_trading_day("NFO", date(2025, 10, 20)) == date(2025, 10, 23)


def test_session_bounds_when_weekday_gives_0915_1530_ist_else_none() -> None:
    assert CAL.session_bounds("NSE", date(2026, 2, 2)) == (ist(2026, 2, 2, 9, 15), ist(2026, 2, 2, 15, 30))
    assert CAL.session_bounds("NSE", date(2026, 2, 1)) is None


def test_next_session_start_when_after_close_friday_is_monday_open() -> None:
    assert CAL.next_session_start("NSE", ist(2026, 1, 30, 16, 0)) == ist(2026, 2, 2, 9, 15)
    assert CAL.next_session_start("NSE", ist(2026, 2, 2, 9, 15)) == ist(2026, 2, 2, 9, 15)
    # Before Diwali 2025's Muhurat the next session is the special one
    assert CAL.next_session_start("NSE", ist(2025, 10, 20, 16, 0)) == ist(2025, 10, 21, 13, 45)


def test_holidays_when_listed_by_year_carry_names_and_exchanges() -> None:
    rows = CAL.holidays(2026)
    assert len(rows) == 15
    assert rows[0].day == date(2026, 1, 26)
    assert rows[0].exchanges == frozenset({"NSE", "BSE", "NFO", "BFO"})
    assert rows[0].name
    assert [s.day for s in CAL.special_sessions(2025)] == [date(2025, 10, 21)]


@pytest.mark.parametrize(
    ("underlying", "kind", "start", "end", "expected"),
    [
        ("NIFTY", "weekly", date(2025, 10, 15), date(2025, 10, 24), [date(2025, 10, 20)]),
        ("NIFTY", "monthly", date(2026, 3, 1), date(2026, 3, 31), [date(2026, 3, 30)]),
        ("SENSEX", "weekly", date(2025, 9, 29), date(2025, 10, 3), [date(2025, 10, 1)]),
        ("NIFTY", "weekly", date(2025, 4, 7), date(2025, 4, 11), [date(2025, 4, 9)]),
        ("NIFTY", "weekly", date(2026, 11, 23), date(2026, 11, 27), [date(2026, 11, 23)]),
        ("BANKNIFTY", "monthly", date(2026, 1, 1), date(2026, 2, 28), [date(2026, 1, 27), date(2026, 2, 24)]),
        ("SENSEX", "monthly", date(2026, 1, 1), date(2026, 1, 31), [date(2026, 1, 29)]),
        ("BANKNIFTY", "weekly", date(2026, 1, 1), date(2026, 3, 31), []),
    ],
)
def test_expiry_dates_when_nominal_day_is_holiday_shift_to_previous_trading_day(
    underlying: str, kind: str, start: date, end: date, expected: list[date]
) -> None:
    assert expiry_dates(underlying, kind, start, end, CAL) == expected  # type: ignore[arg-type]


def test_expiry_dates_when_weekly_transition_switches_thursday_to_tuesday() -> None:
    found = expiry_dates("NIFTY", "weekly", date(2025, 8, 18), date(2025, 9, 12), CAL)
    assert found == [date(2025, 8, 21), date(2025, 8, 28), date(2025, 9, 2), date(2025, 9, 9)]


def test_is_expired_when_past_1530_ist_on_expiry_date() -> None:
    assert not is_expired(date(2026, 2, 3), ist(2026, 2, 3, 15, 29, 59))
    assert is_expired(date(2026, 2, 3), ist(2026, 2, 3, 15, 30))
    assert ist_combine(date(2026, 2, 3), time(15, 30)) == datetime(2026, 2, 3, 10, 0, tzinfo=UTC)


def test_calendar_when_session_is_empty_rejects_it() -> None:
    with pytest.raises(ValueError, match="session"):
        TradingCalendar(weekday_sessions={0: (time(15, 30), time(9, 15))})
