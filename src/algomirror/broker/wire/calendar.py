"""The exchange calendar replies: ``market/holidays`` (protocol §2.6).

Each row is one date: a trading or settlement holiday (``closed_exchanges``, with the exchanges that
still trade that day and their hours in ``open_exchanges``), or a special session (``SPECIAL_SESSION``:
the open exchanges and their hours). Times arrive as epoch milliseconds and are kept aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from algomirror.broker.wire.parsing import _malformed, _rows, _text

ENDPOINT = "market/holidays"
TRADING_HOLIDAY = "TRADING_HOLIDAY"
SETTLEMENT_HOLIDAY = "SETTLEMENT_HOLIDAY"
SPECIAL_SESSION = "SPECIAL_SESSION"


@dataclass(frozen=True, slots=True)
class OpenWindow:
    """An exchange that trades on a listed date, from ``start`` to ``end`` (aware UTC)."""

    exchange: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class ExchangeHoliday:
    """One row of ``market/holidays``: the date (IST), its description and type, the exchanges closed
    and the ones open (with their hours)."""

    day: date
    description: str
    kind: str
    closed: tuple[str, ...]
    open: tuple[OpenWindow, ...]


def _epoch_ms(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(float(value) / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _windows(row: Mapping[str, Any]) -> tuple[OpenWindow, ...]:
    found: list[OpenWindow] = []
    for item in row.get("open_exchanges") or ():
        if not isinstance(item, Mapping):
            raise _malformed(ENDPOINT, "'open_exchanges' holds a non-object")
        start, end = _epoch_ms(item.get("start_time")), _epoch_ms(item.get("end_time"))
        exchange = _text(item.get("exchange")).upper()
        if not exchange or start is None or end is None:
            raise _malformed(ENDPOINT, "an open exchange without its name or hours")
        found.append(OpenWindow(exchange, start, end))
    return tuple(found)


def parse_holidays(payload: Mapping[str, Any]) -> tuple[ExchangeHoliday, ...]:
    """The rows of a ``market/holidays`` reply, by date. Raises MalformedResponseError for a row without
    a readable date or with unreadable exchange lists (a calendar we cannot read is not imported)."""
    rows: list[ExchangeHoliday] = []
    for row in _rows(payload, "data", ENDPOINT):
        try:
            day = date.fromisoformat(_text(row.get("date"))[:10])
        except ValueError:
            raise _malformed(ENDPOINT, f"a row's date {row.get('date')!r} is not YYYY-MM-DD") from None
        closed = row.get("closed_exchanges") or []
        if not isinstance(closed, list):
            raise _malformed(ENDPOINT, "'closed_exchanges' is not a list")
        rows.append(
            ExchangeHoliday(
                day=day,
                description=_text(row.get("description")),
                kind=_text(row.get("holiday_type")).upper() or TRADING_HOLIDAY,
                closed=tuple(sorted({_text(x).upper() for x in closed if _text(x)})),
                open=_windows(row),
            )
        )
    return tuple(sorted(rows, key=lambda r: r.day))


__all__ = [
    "SETTLEMENT_HOLIDAY",
    "SPECIAL_SESSION",
    "TRADING_HOLIDAY",
    "ExchangeHoliday",
    "OpenWindow",
    "parse_holidays",
]
