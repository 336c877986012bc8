"""The OpenAlgo calendar reply (``market/holidays``) read defensively and mapped to our holidays and
special sessions: what is left out is named, never silently dropped."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import pytest

from algomirror.broker.errors import MalformedResponseError
from algomirror.broker.wire.calendar import parse_holidays
from algomirror.db.calendar_edits import HolidayEntry, SpecialEntry, plan_openalgo_import
from algomirror.domain.timeutil import IST


def _ms(day: date, at: time) -> int:
    return int(datetime.combine(day, at, tzinfo=IST).timestamp() * 1000)


def _reply(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "year": 2026, "timezone": "Asia/Kolkata", "data": list(rows)}


DIWALI = date(2026, 11, 8)
ROWS = _reply(
    {
        "date": "2026-01-26",
        "description": "Republic Day",
        "holiday_type": "TRADING_HOLIDAY",
        "closed_exchanges": ["NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "NCO"],
        "open_exchanges": [],
    },
    {
        "date": "2026-03-19",
        "description": "Gudi Padwa",
        "holiday_type": "SETTLEMENT_HOLIDAY",
        "closed_exchanges": [],
        "open_exchanges": [],
    },
    {
        "date": "2026-02-15",
        "description": "Mahashivratri",
        "holiday_type": "TRADING_HOLIDAY",
        "closed_exchanges": ["NSE"],
        "open_exchanges": [],
    },
    {
        "date": DIWALI.isoformat(),
        "description": "Muhurat Trading",
        "holiday_type": "SPECIAL_SESSION",
        "closed_exchanges": [],
        "open_exchanges": [
            {"exchange": "NSE", "start_time": _ms(DIWALI, time(18)), "end_time": _ms(DIWALI, time(19, 15))},
            {"exchange": "NFO", "start_time": _ms(DIWALI, time(18)), "end_time": _ms(DIWALI, time(19, 15))},
            {"exchange": "MCX", "start_time": _ms(DIWALI, time(18)), "end_time": _ms(DIWALI, time(20))},
            {"exchange": "CRYPTO", "start_time": _ms(DIWALI, time(0)), "end_time": _ms(DIWALI, time(23))},
        ],
    },
    {
        "date": "2027-01-26",
        "description": "Next year",
        "holiday_type": "TRADING_HOLIDAY",
        "closed_exchanges": ["NSE"],
        "open_exchanges": [],
    },
)


def test_reply_is_read_with_aware_utc_hours() -> None:
    rows = parse_holidays(ROWS)
    assert [r.day for r in rows] == sorted(r.day for r in rows)
    muhurat = next(r for r in rows if r.kind == "SPECIAL_SESSION")
    assert muhurat.open[0].start == datetime(2026, 11, 8, 12, 30, tzinfo=UTC)


def test_plan_maps_holidays_and_sessions_and_names_what_it_leaves_out() -> None:
    plan = plan_openalgo_import(parse_holidays(ROWS), 2026)
    assert plan.holidays == (
        HolidayEntry(date(2026, 1, 26), "Republic Day", ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD")),
    )
    assert plan.specials == (
        SpecialEntry(DIWALI, "Muhurat Trading", time(18), time(19, 15), ("NSE", "NFO")),
        SpecialEntry(DIWALI, "Muhurat Trading", time(18), time(20), ("MCX",)),
    )
    skipped = "\n".join(plan.skipped)
    assert "Gudi Padwa: a settlement holiday" in skipped
    assert "Mahashivratri: a Sunday" in skipped
    assert "Next year: not in 2026" in skipped


@pytest.mark.parametrize(
    "row",
    [
        {"date": "26/01/2026", "holiday_type": "TRADING_HOLIDAY", "closed_exchanges": ["NSE"]},
        {"date": "2026-01-26", "holiday_type": "TRADING_HOLIDAY", "closed_exchanges": "NSE"},
        {"date": "2026-11-08", "holiday_type": "SPECIAL_SESSION", "open_exchanges": [{"exchange": "NSE"}]},
    ],
)
def test_unreadable_rows_refuse_the_whole_reply(row: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponseError):
        parse_holidays(_reply(row))
