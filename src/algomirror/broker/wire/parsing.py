"""Defensive readers for OpenAlgo reply fields (protocol §6.7, type drift), shared by the wire modules.

Numbers may arrive as strings; an empty, null or unparseable number is ``None`` (unknown), never 0. Money
and prices are ``Decimal``, quantities ``int``, timestamps aware UTC. A missing identity field raises
:class:`~algomirror.broker.errors.MalformedResponseError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from algomirror.broker.errors import MalformedResponseError
from algomirror.domain.money import to_decimal, to_money, to_quantity
from algomirror.domain.timeutil import IST


def _malformed(endpoint: str, what: str) -> MalformedResponseError:
    return MalformedResponseError(f"unexpected reply shape: {what}", endpoint=endpoint)


def _obj(payload: Mapping[str, Any], key: str, endpoint: str) -> Mapping[str, Any]:
    value = payload.get(key)
    if not isinstance(value, Mapping):
        raise _malformed(endpoint, f"'{key}' is not an object")
    return value


def _list(payload: Mapping[str, Any], key: str, endpoint: str) -> list[Any]:
    value = payload.get(key)
    if not isinstance(value, list):
        raise _malformed(endpoint, f"'{key}' is not a list")
    return value


def _rows(payload: Mapping[str, Any], key: str, endpoint: str) -> list[Mapping[str, Any]]:
    rows = _list(payload, key, endpoint)
    if not all(isinstance(row, Mapping) for row in rows):
        raise _malformed(endpoint, f"'{key}' holds a non-object row")
    return rows


def _book_with_statistics(
    payload: Mapping[str, Any], key: str, endpoint: str
) -> tuple[list[Mapping[str, Any]], Mapping[str, Any]]:
    """The orderbook/holdings envelope: ``data`` is an object with a ``key`` rows list and a
    ``statistics`` object, or an empty list (some brokers answer an empty book so).

    Returns the rows and the statistics (empty when absent or not an object; every figure then reads
    as unknown). A null rows list is an empty book. Raises MalformedResponseError when ``data`` is
    neither, when the rows key is missing (a read we cannot trust must not empty our copy of the book),
    or when the rows list holds a non-object.
    """
    data = payload.get("data")
    if isinstance(data, list) and not data:
        return [], {}
    data = _obj(payload, "data", endpoint)
    if key not in data:
        raise _malformed(endpoint, f"'data' has no '{key}' list")
    rows = _rows(data, key, endpoint) if data[key] is not None else []
    stats = data.get("statistics")
    return rows, stats if isinstance(stats, Mapping) else {}


def _text(value: object) -> str:
    """A display string; numbers are rendered, null is empty."""
    if value is None:
        return ""
    return str(value).strip()


def _opt_text(value: object) -> str | None:
    text = _text(value)
    return text or None


def _ident(row: Mapping[str, Any], key: str, endpoint: str) -> str:
    """A required identifier (order id, symbol): numbers are turned into strings, empty is malformed."""
    value = row.get(key)
    if isinstance(value, bool) or value is None:
        raise _malformed(endpoint, f"missing '{key}'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise _malformed(endpoint, f"empty '{key}'")
    return text


def _orderid(value: object) -> str | None:
    """Order ids are always strings; a number is rendered without a decimal point."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _money(row: Mapping[str, Any], key: str) -> Decimal | None:
    try:
        return to_money(row.get(key))
    except ArithmeticError:
        # Too many digits to round to the paisa (e.g. 1e30): garbage, so unknown, not a crash.
        return None


def _dec(row: Mapping[str, Any], key: str) -> Decimal | None:
    return to_decimal(row.get(key))


def _qty(row: Mapping[str, Any], key: str) -> int | None:
    return to_quantity(row.get(key))


def _int_from(value: object) -> int | None:
    """A count that may arrive as ``75.0`` (``lot_size``) or ``"75"``."""
    return to_quantity(value)


_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%d-%b-%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%d-%m-%Y %H:%M:%S")


def parse_gateway_time(value: object) -> datetime | None:
    """Order/trade times are naive IST wall-clock text in several broker formats -> aware UTC.

    Epoch numbers (seconds, or milliseconds when > 1e11) are accepted too. A time-only or unknown
    format gives ``None``: the caller keeps the raw text.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value) / 1000 if value > 1e11 else float(value)
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None  # out of any calendar's range: unknown
    if not isinstance(value, str):
        return None
    text = value.strip()
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=IST).astimezone(UTC)
        except ValueError:
            continue
    return None


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
    )
}


def parse_expiry(value: object) -> date | None:
    """``25-NOV-25``, ``25NOV25`` or ``25-Nov-2025`` -> date; empty or unknown -> None."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(\d{1,2})-?([A-Za-z]{3})-?(\d{2}|\d{4})", value.strip())
    if match is None:
        return None
    day, mon, year = match.groups()
    month = _MONTHS.get(mon.upper())
    if month is None:
        return None
    full_year = int(year) + 2000 if len(year) == 2 else int(year)
    try:
        return date(full_year, month, int(day))
    except ValueError:
        return None


def format_expiry(value: date) -> str:
    """date -> ``DDMMMYY`` as symbols and the options endpoints expect (``25NOV25``)."""
    return value.strftime("%d%b%y").upper()


def _wire_number(value: Decimal | int | float | str) -> str:
    """Numbers go out as strings (as the SDK sends them); Decimal keeps its exact text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)
