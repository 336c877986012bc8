from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from algomirror.domain.errors import InvalidSymbol, UnknownUnderlying
from algomirror.domain.instruments import (
    ParsedSymbol,
    compact_to_dashed,
    dashed_to_compact,
    exchanges_for,
    format_expiry,
    format_expiry_dashed,
    format_strike,
    future_symbol,
    option_exchange_for,
    option_symbol,
    parse_expiry,
    parse_expiry_dashed,
    parse_symbol,
    underlying_spec,
)

# The protocol's example table (OPENALGO-PROTOCOL §4.2).
EXAMPLES = [
    ("NIFTY", date(2025, 11, 25), None, "FUT", "NIFTY25NOV25FUT"),
    ("NIFTY", date(2025, 11, 25), Decimal(26000), "CE", "NIFTY25NOV2526000CE"),
    ("BANKNIFTY", date(2025, 12, 30), Decimal(59000), "PE", "BANKNIFTY30DEC2559000PE"),
    ("SENSEX", date(2025, 12, 4), Decimal(85500), "CE", "SENSEX04DEC2585500CE"),
    ("VEDL", date(2024, 4, 25), Decimal("292.5"), "CE", "VEDL25APR24292.5CE"),
    ("USDINR", date(2024, 4, 19), Decimal(82), "CE", "USDINR19APR2482CE"),
]


@pytest.mark.parametrize(("base", "expiry", "strike", "kind", "symbol"), EXAMPLES)
def test_build_when_protocol_example_matches_symbol(
    base: str, expiry: date, strike: Decimal | None, kind: str, symbol: str
) -> None:
    built = future_symbol(base, expiry) if kind == "FUT" else option_symbol(base, expiry, strike or 0, kind)
    assert built == symbol


@pytest.mark.parametrize(("base", "expiry", "strike", "kind", "symbol"), EXAMPLES)
def test_parse_when_protocol_example_returns_parts(
    base: str, expiry: date, strike: Decimal | None, kind: str, symbol: str
) -> None:
    assert parse_symbol(symbol) == ParsedSymbol(base, expiry, kind, strike)  # type: ignore[arg-type]


def test_build_when_strike_has_trailing_zero_decimals_drops_them() -> None:
    assert option_symbol("NIFTY", date(2025, 12, 30), Decimal("26000.00"), "CE") == "NIFTY30DEC2526000CE"
    assert option_symbol("VEDL", date(2024, 4, 25), Decimal("292.50"), "PE") == "VEDL25APR24292.5PE"
    assert format_strike(Decimal("24.25")) == "24.25"


def test_build_when_option_type_or_strike_invalid_raises() -> None:
    with pytest.raises(InvalidSymbol):
        option_symbol("NIFTY", date(2025, 12, 30), 26000, "XX")
    with pytest.raises(InvalidSymbol):
        option_symbol("NIFTY", date(2025, 12, 30), 0, "CE")


@pytest.mark.parametrize(
    "symbol", ["NIFTY", "SBIN", "nifty25nov2526000ce", "NIFTY31FEB2526000CE", "NIFTY25NOV25"]
)
def test_parse_when_not_a_valid_derivative_returns_none(symbol: str) -> None:
    assert parse_symbol(symbol) is None


def test_parse_when_base_holds_digits_anchors_on_month() -> None:
    parsed = parse_symbol("NIFTYNXT5030DEC2570000CE")
    assert parsed == ParsedSymbol("NIFTYNXT50", date(2025, 12, 30), "CE", Decimal(70000))


def test_expiry_formats_when_round_tripped_are_stable() -> None:
    day = date(2025, 11, 4)
    assert format_expiry(day) == "04NOV25"
    assert format_expiry_dashed(day) == "04-NOV-25"
    assert parse_expiry("04NOV25") == day
    assert parse_expiry_dashed("04-NOV-25") == day
    assert dashed_to_compact("25-NOV-25") == "25NOV25"
    assert compact_to_dashed("25NOV25") == "25-NOV-25"


@pytest.mark.parametrize("text", ["25nov25", "25-NOV-25", "2025-11-25", "31NOV25", "25XYZ25"])
def test_parse_expiry_when_not_ddmmmyy_raises(text: str) -> None:
    with pytest.raises(InvalidSymbol):
        parse_expiry(text)


def test_exchanges_when_nse_or_bse_underlying_map_per_product_table() -> None:
    for name in ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY"):
        mapping = exchanges_for(name)
        assert (mapping.fo, mapping.equity, mapping.spot, mapping.expiry_list) == (
            "NFO",
            "NSE",
            "NSE_INDEX",
            "NFO",
        )
    for name in ("SENSEX", "BANKEX"):
        mapping = exchanges_for(name)
        assert (mapping.fo, mapping.equity, mapping.spot, mapping.expiry_list) == (
            "BFO",
            "BSE",
            "BSE_INDEX",
            "BFO",
        )
    assert option_exchange_for("NSE_INDEX") == "NFO"
    assert option_exchange_for("BSE") == "BFO"
    assert option_exchange_for("MCX") == "MCX"


def test_spec_when_underlying_known_has_step_and_tick() -> None:
    steps = {
        n: underlying_spec(n).strike_step
        for n in ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "SENSEX", "BANKEX")
    }
    assert steps == {
        "NIFTY": 50,
        "BANKNIFTY": 100,
        "FINNIFTY": 50,
        "MIDCPNIFTY": 25,
        "SENSEX": 100,
        "BANKEX": 100,
    }
    assert underlying_spec("nifty").tick_size == Decimal("0.05")
    with pytest.raises(UnknownUnderlying):
        underlying_spec("CRUDEOIL")
