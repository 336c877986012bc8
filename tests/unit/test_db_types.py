"""Money and UTCDateTime conversions, without a database (the dialects are only consulted for names)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from algomirror.db.models import make_trade_key
from algomirror.db.models.enums import in_check
from algomirror.db.types import Money, MoneyLiteral, Price, UTCDateTime
from algomirror.domain.timeutil import IST

SQLITE = sqlite.dialect()
PG = postgresql.dialect()


def test_money_bind_when_float_given_raises_type_error() -> None:
    with pytest.raises(TypeError):
        Money().process_bind_param(12.5, PG)


def test_money_bind_when_more_decimals_than_scale_rounds_half_up() -> None:
    assert Money().process_bind_param(Decimal("1.005"), PG) == Decimal("1.01")
    assert Money().process_bind_param(Decimal("-1.005"), PG) == Decimal("-1.01")


def test_money_bind_when_sqlite_stores_integer_ten_thousandths() -> None:
    assert Money().process_bind_param(Decimal("12345678.05"), SQLITE) == 123456780500
    assert Money().process_bind_param("7", SQLITE) == 70000
    assert Money().process_bind_param(-3, SQLITE) == -30000
    assert Price().process_bind_param(Decimal("123.4567"), SQLITE) == 1234567


def test_money_result_when_sqlite_units_gives_exact_decimal() -> None:
    assert Money().process_result_value(123456780500, SQLITE) == Decimal("12345678.05")
    assert Money().process_result_value(9999999999999900, SQLITE) == Decimal("999999999999.99")
    assert Price().process_result_value(1234567, SQLITE) == Decimal("123.4567")
    # An expression computed in SQL (AVG) may come back as a float of units.
    assert Price().process_result_value(1234567.0, SQLITE) == Decimal("123.4567")


def test_price_bind_when_four_decimals_keeps_them_on_both_backends() -> None:
    assert Price().process_bind_param(Decimal("123.4567"), PG) == Decimal("123.4567")
    assert Price().process_bind_param(Decimal("123.45675"), PG) == Decimal("123.4568")


def test_money_literal_when_compiled_renders_storage_units_per_dialect() -> None:
    from sqlalchemy import column

    expr = column("margin_percentage") <= MoneyLiteral("100")
    assert str(expr.compile(dialect=SQLITE, compile_kwargs={"literal_binds": True})).endswith("1000000")
    assert str(expr.compile(dialect=PG, compile_kwargs={"literal_binds": True})).endswith("100")
    with pytest.raises(TypeError):
        MoneyLiteral(1.5)  # type: ignore[arg-type]


def test_money_result_when_none_stays_none() -> None:
    assert Money().process_result_value(None, PG) is None
    assert Money().process_bind_param(None, PG) is None


def test_money_when_custom_scale_quantizes_to_it() -> None:
    assert Money(5, 2).process_result_value(Decimal("3"), PG) == Decimal("3.00")


def test_utc_bind_when_naive_raises_value_error() -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 5, 9, 15), PG)


def test_utc_bind_when_ist_given_converts_to_utc() -> None:
    value = datetime(2026, 1, 5, 9, 15, tzinfo=IST)
    assert UTCDateTime().process_bind_param(value, PG) == datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
    # SQLite keeps naive UTC text so that lexical order is time order.
    assert UTCDateTime().process_bind_param(value, SQLITE) == datetime(2026, 1, 5, 3, 45)


def test_utc_result_when_naive_from_sqlite_is_aware_utc() -> None:
    got = UTCDateTime().process_result_value(datetime(2026, 1, 5, 3, 45), SQLITE)
    assert got == datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
    assert got is not None and got.utcoffset() == timedelta(0)


def test_utc_result_when_offset_from_postgres_is_converted_to_utc() -> None:
    other = timezone(timedelta(hours=-4))
    got = UTCDateTime().process_result_value(datetime(2026, 1, 5, 0, 0, tzinfo=other), PG)
    assert got == datetime(2026, 1, 5, 4, 0, tzinfo=UTC)
    assert got is not None and got.tzinfo == UTC


def test_make_trade_key_when_broker_gives_trade_id_uses_it() -> None:
    assert make_trade_key("TRADE-20251122-100211-ab12cd34", 3) == "TRADE-20251122-100211-ab12cd34"


def test_make_trade_key_when_no_trade_id_uses_ordinal() -> None:
    assert make_trade_key(None, 1) == "#1"
    assert make_trade_key("", 2) == "#2"
    with pytest.raises(ValueError):
        make_trade_key(None, 0)


def test_in_check_when_value_has_quote_raises_value_error() -> None:
    with pytest.raises(ValueError):
        in_check("status", ("it's",))
