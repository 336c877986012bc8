"""Where the embedded demo's market clock starts and where it moves on to (pure calendar logic)."""

from __future__ import annotations

from datetime import UTC, datetime

from algomirror.demo import demo_start_instant, next_demo_session

# 09:20 IST = 03:50 UTC.


def test_demo_start_when_trading_day_after_0920_starts_today() -> None:
    assert demo_start_instant(datetime(2026, 11, 25, 10, 0, tzinfo=UTC)) == datetime(
        2026, 11, 25, 3, 50, tzinfo=UTC
    )


def test_demo_start_when_before_0920_starts_on_previous_trading_day() -> None:
    # Wed 25 Nov 2026 08:00 IST; Tue 24 Nov is a holiday, so Monday 23 Nov.
    assert demo_start_instant(datetime(2026, 11, 25, 2, 30, tzinfo=UTC)) == datetime(
        2026, 11, 23, 3, 50, tzinfo=UTC
    )


def test_demo_start_when_weekend_starts_on_friday() -> None:
    assert demo_start_instant(datetime(2026, 11, 29, 12, 0, tzinfo=UTC)) == datetime(
        2026, 11, 27, 3, 50, tzinfo=UTC
    )


def test_next_demo_session_when_next_day_is_holiday_skips_it() -> None:
    assert next_demo_session(datetime(2026, 11, 23, 9, 55, tzinfo=UTC)) == datetime(
        2026, 11, 25, 3, 50, tzinfo=UTC
    )
