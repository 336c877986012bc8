from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.errors import NoPremiumQuotes, StrikeNotListed
from algomirror.domain.strikes import (
    atm_from_listed,
    atm_strike,
    parse_offset,
    premium_deviation_limit,
    premium_scan_strikes,
    select_premium_near,
    strike_for_offset,
)

D = Decimal
CHAIN = [D(s) for s in range(23500, 24501, 50)]


@pytest.mark.parametrize(
    ("spot", "step", "atm"),
    [
        ("24025", 50, 24050),
        ("24024.95", 50, 24000),
        ("24075", 50, 24100),
        ("59050", 100, 59100),
        ("13512.5", 25, 13525),
        ("13512.45", 25, 13500),
    ],
)
def test_atm_when_spot_between_strikes_rounds_half_up(spot: str, step: int, atm: int) -> None:
    assert atm_strike(D(spot), D(step)) == atm


@given(spot=st.decimals(min_value=1000, max_value=100000, places=2), step=st.sampled_from([25, 50, 100]))
def test_atm_when_any_spot_is_step_multiple_within_half_step(spot: Decimal, step: int) -> None:
    atm = atm_strike(spot, D(step))
    assert atm % step == 0
    assert abs(atm - spot) <= D(step) / 2
    if abs(atm - spot) == D(step) / 2:
        assert atm > spot


def test_atm_from_listed_when_tie_takes_higher_and_gaps_take_nearest() -> None:
    assert atm_from_listed(D("24025"), CHAIN) == 24050
    assert atm_from_listed(D("24024.95"), CHAIN) == 24000
    assert atm_from_listed(D("24080"), [D(24000), D(24200)]) == 24000
    with pytest.raises(StrikeNotListed):
        atm_from_listed(D(24000), [])


@pytest.mark.parametrize(
    ("kind", "moneyness", "k", "strike"),
    [
        ("CE", "ITM", 2, 23900),
        ("CE", "OTM", 2, 24100),
        ("PE", "ITM", 2, 24100),
        ("PE", "OTM", 2, 23900),
        ("CE", "ATM", 0, 24000),
    ],
)
def test_offset_when_counted_in_listed_strikes_mirrors_ce_and_pe(
    kind: str, moneyness: str, k: int, strike: int
) -> None:
    assert strike_for_offset(CHAIN, D(24000), kind, moneyness, k) == strike  # type: ignore[arg-type]


def test_offset_when_chain_has_gaps_counts_listed_strikes_not_steps() -> None:
    gappy = [D(23800), D(23900), D(24000), D(24200), D(24500)]
    assert strike_for_offset(gappy, D(24000), "CE", "OTM", 2) == 24500
    assert strike_for_offset(gappy, D(24000), "PE", "ITM", 1) == 24200


def test_offset_when_beyond_listed_or_atm_missing_raises() -> None:
    with pytest.raises(StrikeNotListed):
        strike_for_offset(CHAIN, D(24000), "CE", "OTM", 11)
    with pytest.raises(StrikeNotListed):
        strike_for_offset(CHAIN, D(24010), "CE", "OTM", 1)


def test_parse_offset_when_valid_or_invalid() -> None:
    assert parse_offset("ATM") == ("ATM", 0)
    assert parse_offset("itm3") == ("ITM", 3)
    assert parse_offset("OTM12") == ("OTM", 12)
    for bad in ("ITM", "OTM0", "ATM1", "XTM2"):
        with pytest.raises(ValueError):
            parse_offset(bad)


def test_premium_scan_when_chain_wide_keeps_atm_plus_minus_20_steps() -> None:
    wide = [D(s) for s in range(22000, 26001, 50)]
    picked = premium_scan_strikes(wide, D(24000), D(50))
    assert picked[0] == 23000
    assert picked[-1] == 25000
    assert len(picked) == 41


def test_premium_near_when_exact_tie_prefers_premium_below_target() -> None:
    pick = select_premium_near(D(100), {D(24000): D(105), D(24100): D(95), D(24200): D(40)}, D(24000))
    assert pick.strike == 24100
    assert pick.ltp == 95
    assert pick.deviation == D("0.05")
    assert not pick.warning


def test_premium_near_when_same_premium_prefers_nearer_atm_and_ignores_zero() -> None:
    quotes = {D(23800): D(90), D(24200): D(90), D(24000): D(0), D(24050): None}
    assert select_premium_near(D(100), quotes, D(24050)).strike == 24200


def test_premium_near_when_deviation_beyond_threshold_warns() -> None:
    assert select_premium_near(D(100), {D(24000): D(111)}, D(24000)).warning
    assert not select_premium_near(D(100), {D(24000): D(110)}, D(24000)).warning
    assert select_premium_near(D(40), {D(24000): D(49)}, D(24000)).warning
    assert not select_premium_near(D(60), {D(24000): D(69)}, D(24000)).warning
    assert premium_deviation_limit(D(49.95)) == D("0.20")
    assert premium_deviation_limit(D(50)) == D("0.15")
    assert premium_deviation_limit(D(100)) == D("0.10")


def test_premium_near_when_no_positive_quote_raises() -> None:
    with pytest.raises(NoPremiumQuotes):
        select_premium_near(D(100), {D(24000): D(0), D(24050): None}, D(24000))
