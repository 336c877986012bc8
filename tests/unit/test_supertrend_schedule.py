"""When the Supertrend exit evaluates (PRODUCT §6.5 "When"): the newest candle closed at least the delay
ago, in today's session only; and the ``supertrend`` event's shape."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest

from algomirror.domain.calendar import default_calendar
from algomirror.domain.candles import Candle
from algomirror.domain.timeutil import ist_combine
from algomirror.engine.supertrend_rule import RunSetting, event_of, last_closed_start

DAY = date(2026, 12, 2)  # a Wednesday
SATURDAY = date(2026, 12, 5)


def ist(hh: int, mm: int, ss: int = 0, day: date = DAY) -> datetime:
    return ist_combine(day, time(hh, mm, ss))


@pytest.mark.parametrize(
    ("now", "minutes", "expected"),
    [
        (ist(9, 20, 2), 5, None),  # the first candle closed 2 s ago: not yet
        (ist(9, 20, 3), 5, ist(9, 15)),
        (ist(9, 24, 59), 5, ist(9, 15)),
        (ist(9, 25, 3), 5, ist(9, 20)),
        (ist(10, 0, 3), 15, ist(9, 45)),
        (ist(10, 0, 2), 15, ist(9, 30)),
        (ist(15, 30, 3), 10, ist(15, 25)),  # the cut last candle 15:25–15:30
        (ist(15, 30, 2), 10, ist(15, 15)),
        (ist(18, 0), 5, ist(15, 25)),  # after the close: the day's last candle
        (ist(9, 0), 5, None),  # before the open: nothing of today
        (ist(11, 0, 3, SATURDAY), 5, None),
    ],
)
def test_the_candle_due(now: datetime, minutes: int, expected: datetime | None) -> None:
    assert last_closed_start(now, minutes, 3.0, default_calendar()) == expected


def test_the_event_has_the_c4_shape() -> None:
    setting = RunSetting(7, 1, "S", True, None, 7, 3.0, "5m", ist(9, 15), None)
    candle = Candle(ist(10, 0), Decimal("1"), Decimal("3"), Decimal("1"), Decimal("2.345"))
    event = event_of(setting, "ok", None, candle=candle, line=1.5, direction=-1, kind="breakout")
    assert event == {
        "run_id": 7,
        "timeframe": "5m",
        "state": "ok",
        "message": None,
        "candle_at": "2026-12-02T04:30:00+00:00",
        "close": "2.35",
        "line": "1.50",
        "direction": -1,
        "exit_type": "breakout",
    }
    assert event_of(setting, "unknown", "why")["candle_at"] is None
