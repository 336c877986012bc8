"""Column types: Money (exact Decimal on both databases) and UTCDateTime (aware UTC in and out)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, Integer, Numeric
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from algomirror.domain.timeutil import ensure_aware

# SQLite has no decimal type: its NUMERIC affinity turns "123.4567" into a binary float. Every Money
# value is therefore stored there as an INTEGER count of 1/10,000 rupee (exact, and SUM() in SQL stays
# exact); one unit for all columns, so SQL arithmetic between money columns is consistent.
SQLITE_MONEY_SCALE = 4
_SQLITE_FACTOR = Decimal(10) ** SQLITE_MONEY_SCALE
_SCALING_OPERATORS = frozenset({operators.mul, operators.truediv, operators.floordiv, operators.mod})


class Money(TypeDecorator[Decimal]):
    """Rupees as ``Decimal``: ``NUMERIC(precision, scale)`` on PostgreSQL, integer 1/10,000-rupee units
    on SQLite (see :data:`SQLITE_MONEY_SCALE`). Values are rounded half-up to ``scale`` decimals.

    Amounts (funds, P&L, limits) use the default scale 2; prices and averages use :func:`Price` (4).
    Floats are refused on write: they carry binary rounding error into money columns.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 14, scale: int = 2) -> None:
        if scale > SQLITE_MONEY_SCALE:
            raise ValueError(f"Money scale {scale} exceeds the SQLite storage scale {SQLITE_MONEY_SCALE}")
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self._quantum = Decimal(1).scaleb(-scale)

    def quantize(self, value: Any) -> Decimal:
        """``value`` (Decimal, int or str) rounded half-up to this column's scale. Raises TypeError for a
        float and decimal.InvalidOperation for text that is not a number."""
        if isinstance(value, float):
            raise TypeError("Money columns take Decimal, int or str, not float")
        return Decimal(value).quantize(self._quantum, rounding=ROUND_HALF_UP)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = self.quantize(value)
        if dialect.name == "sqlite":
            return int(amount * _SQLITE_FACTOR)
        return amount

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        """A plain number beside ``*``, ``/`` or ``%`` is a factor, not an amount: it must not be turned
        into storage units (on SQLite ``pnl * 2`` would otherwise become ``pnl * 20000``). Comparisons,
        ``+`` and ``-`` keep money semantics. Never multiply two money columns in SQL."""
        if op in _SCALING_OPERATORS:
            return Integer() if isinstance(value, int) else Numeric()
        return self

    def process_literal_param(self, value: Any, dialect: Dialect) -> str:
        bound = self.process_bind_param(value, dialect)
        return "NULL" if bound is None else str(bound)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            # Integer units; an expression computed in SQL (AVG, a ratio) may come back as a float.
            units = Decimal(value) if isinstance(value, int) else Decimal(str(value))
            return (units / _SQLITE_FACTOR).quantize(self._quantum, rounding=ROUND_HALF_UP)
        return Decimal(str(value)).quantize(self._quantum, rounding=ROUND_HALF_UP)


def Price(precision: int = 16) -> Money:
    """A price or average price: 4 decimals (an average of fills such as 123.4567 is kept exactly)."""
    return Money(precision, 4)


class MoneyLiteral(ColumnElement[Decimal]):
    """A rupee constant in DDL (server defaults, CHECKs), rendered per dialect: ``205000.00`` on
    PostgreSQL, ``2050000000`` (units) on SQLite, so the database agrees with :class:`Money` storage."""

    inherit_cache = True

    def __init__(self, value: str | int | Decimal) -> None:
        if isinstance(value, float):
            raise TypeError("MoneyLiteral takes Decimal, int or str, not float")
        self.value = Decimal(value)
        self.type = Numeric()

    def render(self, dialect_name: str) -> str:
        if dialect_name == "sqlite":
            return str(int(self.value * _SQLITE_FACTOR))
        return str(self.value)


@compiles(MoneyLiteral)
def _compile_money_literal(element: MoneyLiteral, compiler: SQLCompiler, **_kw: Any) -> str:
    return element.render(compiler.dialect.name)


def money_default(value: str) -> MoneyLiteral:
    """``server_default=`` for a Money column, e.g. ``money_default("205000.00")``."""
    return MoneyLiteral(value)


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
