"""Row ids taken from URLs and query strings, bounded to what every id column can hold.

Every primary key is SQLAlchemy ``Integer``: 64-bit on SQLite but 32-bit ``integer`` on PostgreSQL. An id
outside 1..2^31−1 therefore names no row on either database; passing it to the driver instead raises
(SQLite: ``OverflowError`` above 2^63−1; PostgreSQL compares across types or fails the cast), which was a
500. Such ids are refused before any query: a 404 for a path, "no filter" for a query string.
"""

from __future__ import annotations

from typing import Any

from werkzeug.routing import IntegerConverter, Map

# The largest value of a PostgreSQL ``integer`` (SQLAlchemy ``Integer``), the narrowest id column.
MAX_ID = 2**31 - 1
# Longer digit strings are refused unparsed (leading zeros up to this length are still read as the id).
_MAX_DIGITS = 20


class IdConverter(IntegerConverter):
    """The ``<id:name>`` URL converter: ASCII digits, 1..:data:`MAX_ID`; anything else does not match
    the rule, so the request is a 404 without touching the database."""

    # ASCII only (``\\d`` would also match other scripts' digits) and short enough to parse cheaply.
    regex = rf"[0-9]{{1,{_MAX_DIGITS}}}"

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, min=1, max=MAX_ID)


def parse_id(raw: str | None) -> int | None:
    """An id from a query-string value: the int when ``raw`` is ASCII digits in 1..:data:`MAX_ID`
    (surrounding spaces ignored), else None. Never raises."""
    text = (raw or "").strip()
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


__all__ = ["MAX_ID", "IdConverter", "parse_id"]
