from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.money import format_inr, to_decimal, to_money, to_quantity
from algomirror.domain.timeutil import FakeClock, ensure_aware, format_ist, ist_combine, ist_today


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("320150.66", Decimal("320150.66")),
        (320150.66, Decimal("320150.66")),
        (5, Decimal(5)),
        (" 1,234.50 ", Decimal("1234.50")),
        ("", None),
        (None, None),
        ("abc", None),
        ("NaN", None),
        (True, None),
        ([], None),
    ],
)
def test_to_decimal_when_gateway_value_given_coerces_or_unknown(
    raw: object, expected: Decimal | None
) -> None:
    assert to_decimal(raw) == expected


def test_to_money_when_more_places_rounds_half_up() -> None:
    assert to_money("10.005") == Decimal("10.01")
    assert to_money(-7.885) == Decimal("-7.89")


@pytest.mark.parametrize(
    ("raw", "expected"), [("75", 75), (75.0, 75), ("-150", -150), ("7.5", None), ("", None)]
)
def test_to_quantity_when_value_given_is_int_or_unknown(raw: object, expected: int | None) -> None:
    assert to_quantity(raw) == expected


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("123456.5"), "₹1,23,456.50"),
        (Decimal("100"), "₹100.00"),
        (Decimal("-10000000"), "-₹1,00,00,000.00"),
        (Decimal("999.999"), "₹1,000.00"),
        (None, "—"),
    ],
)
def test_format_inr_when_amount_given_uses_indian_grouping(amount: Decimal | None, text: str) -> None:
    assert format_inr(amount) == text


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=2, allow_nan=False, allow_infinity=False))
def test_format_inr_roundtrips_value(amount: Decimal) -> None:
    text = format_inr(amount)
    back = Decimal(text.replace("₹", "").replace(",", ""))
    assert back == amount


def test_ist_today_when_after_1830_utc_is_next_day() -> None:
    assert ist_today(datetime(2026, 11, 24, 18, 29, tzinfo=UTC)) == date(2026, 11, 24)
    assert ist_today(datetime(2026, 11, 24, 18, 30, tzinfo=UTC)) == date(2026, 11, 25)


def test_ist_combine_when_market_open_is_0345_utc() -> None:
    assert ist_combine(date(2026, 11, 25), time(9, 15)) == datetime(2026, 11, 25, 3, 45, tzinfo=UTC)


def test_ensure_aware_when_naive_raises() -> None:
    with pytest.raises(ValueError, match="naive"):
        ensure_aware(datetime(2026, 1, 1))


def test_format_ist_when_utc_instant_shows_ist() -> None:
    assert format_ist(datetime(2026, 11, 25, 3, 45, tzinfo=UTC), "%H:%M") == "09:15 IST"
    assert format_ist(None) == ""


def test_fake_clock_when_advanced_moves_exactly() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(timedelta(seconds=90))
    assert clock.now() == datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)
