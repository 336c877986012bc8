"""Column types: Money (Decimal, NUMERIC) and UTCDateTime (aware UTC in and out, on every backend)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric
from sqlalchemy.types import TypeDecorator

from algomirror.domain.timeutil import ensure_aware


class Money(TypeDecorator[Decimal]):
    """Rupees (or any 2-dp amount) as ``Decimal``; ``NUMERIC(precision, scale)`` in the database.

    Floats are refused on write: they carry binary rounding error into money columns.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 14, scale: int = 2) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self._quantum = Decimal(1).scaleb(-scale)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("Money columns take Decimal, int or str, not float")
        amount = Decimal(value).quantize(self._quantum, rounding=ROUND_HALF_UP)
        # SQLite has no decimal type; its NUMERIC affinity stores the text exactly for 2-dp values.
        return str(amount) if dialect.name == "sqlite" else amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value)).quantize(self._quantum, rounding=ROUND_HALF_UP)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes. Naive values are refused on write; reads are always aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        aware = ensure_aware(value)
        # SQLite stores text; keep it naive-UTC so lexical order = time order.
        return aware.replace(tzinfo=None) if dialect.name == "sqlite" else aware

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = value
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC)
