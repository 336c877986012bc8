"""Pure resolution rules (domain/resolution.py): ATM against listed strikes, strike picks, naked shorts,
lot size and freeze with the user's fallbacks, and the estimated margin of one account's legs."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from algomirror.domain.contract_specs import freeze_qty, lot_size
from algomirror.domain.errors import StrikeNotListed
from algomirror.domain.resolution import (
    LegShape,
    SizedLeg,
    atm_for,
    contract_size,
    estimate_margins,
    naked_shorts,
    pick_strike,
)
from algomirror.domain.sizing import MarginRates

D = Decimal
LISTED = [D(s) for s in range(25000, 27001, 50)]
NIFTY_RATES = MarginRates(D(205000), D(250000), D(250000), D(320000), D(215000), D(215000), D(20000))


def test_atm_is_half_up_when_listed_and_the_nearest_listed_otherwise() -> None:
    assert atm_for(D("26025.00"), D(50), LISTED) == D(26050)
    assert atm_for(D("26024.95"), D(50), LISTED) == D(26000)
    sparse = [D(25900), D(26100)]  # 26,000 not listed: the nearest listed strike, tie → higher
    assert atm_for(D("26000"), D(50), sparse) == D(26100)
    assert atm_for(D("25950"), D(50), sparse) == D(25900)


@pytest.mark.parametrize(
    ("selection", "option_type", "offset", "expected"),
    [
        ("ATM", "CE", 0, 26000),
        ("OTM", "CE", 2, 26100),
        ("OTM", "PE", 2, 25900),
        ("ITM", "CE", 3, 25850),
        ("ITM", "PE", 1, 26050),
    ],
)
def test_strike_counted_in_listed_strikes(
    selection: str, option_type: str, offset: int, expected: int
) -> None:
    strike = pick_strike(
        selection, option_type=option_type, offset=offset, strike_price=None, listed=LISTED, atm=D(26000)
    )
    assert strike == D(expected)


def test_strike_counts_listed_strikes_not_steps_on_an_uneven_chain() -> None:
    uneven = [D(25800), D(25900), D(26000), D(26050), D(26200)]
    assert pick_strike(
        "OTM", option_type="CE", offset=2, strike_price=None, listed=uneven, atm=D(26000)
    ) == D(26200)


def test_exact_strike_must_be_listed_and_targets_beyond_the_chain_fail() -> None:
    assert pick_strike(
        "strike_price", option_type="CE", offset=0, strike_price=D(26500), listed=LISTED, atm=D(26000)
    ) == D(26500)
    with pytest.raises(StrikeNotListed):
        pick_strike(
            "strike_price", option_type="CE", offset=0, strike_price=D(26525), listed=LISTED, atm=D(26000)
        )
    with pytest.raises(StrikeNotListed):
        pick_strike("OTM", option_type="CE", offset=30, strike_price=None, listed=LISTED, atm=D(26000))
    with pytest.raises(ValueError, match="no strike price"):
        pick_strike(
            "strike_price", option_type="CE", offset=0, strike_price=None, listed=LISTED, atm=D(26000)
        )


def test_naked_shorts_are_sells_without_a_same_type_buy() -> None:
    condor = [
        LegShape(1, "NIFTY", "BUY", "CE"),
        LegShape(2, "NIFTY", "BUY", "PE"),
        LegShape(3, "NIFTY", "SELL", "CE"),
        LegShape(4, "NIFTY", "SELL", "PE"),
    ]
    assert naked_shorts(condor) == set()
    assert naked_shorts(condor[1:]) == {3}  # the CE wing is gone
    # A BUY on another instrument hedges nothing; futures are not "naked shorts" of an option type.
    mixed = [
        LegShape(1, "SENSEX", "BUY", "CE"),
        LegShape(2, "NIFTY", "SELL", "CE"),
        LegShape(3, "NIFTY", "SELL", "FUT"),
    ]
    assert naked_shorts(mixed) == {2}


def test_lot_size_from_contract_data_then_settings_with_a_mismatch_warning() -> None:
    expiry, today = date(2026, 12, 1), date(2026, 11, 25)
    size = contract_size("NIFTY", expiry, today, next_month=False, settings_lot=75, settings_freeze=1800)
    assert size.lot_size == lot_size("NIFTY", expiry) and size.source == "contract data"
    assert size.freeze == freeze_qty("NIFTY", today)
    assert size.warning is not None and "75" in size.warning
    same = contract_size("NIFTY", expiry, today, next_month=False, settings_lot=lot_size("NIFTY", expiry))
    assert same.warning is None


def test_unknown_contracts_fall_back_to_instrument_data_then_settings() -> None:
    expiry, today = date(2026, 12, 1), date(2026, 11, 25)
    chain = contract_size("XYZ", expiry, today, next_month=False, chain_lot=40, settings_lot=25)
    assert (chain.lot_size, chain.source) == (40, "instrument data")
    nxt = contract_size(
        "XYZ", expiry, today, next_month=True, settings_lot=25, settings_next_lot=30, settings_freeze=900
    )
    assert (nxt.lot_size, nxt.freeze, nxt.source) == (30, 900, "your instrument settings")
    assert (
        contract_size("XYZ", expiry, today, next_month=False, settings_lot=25, settings_freeze=25).freeze
        is None
    )
    with pytest.raises(ValueError, match="unknown"):
        contract_size("XYZ", expiry, today, next_month=False)


def _leg(
    number: int, action: str, kind: str, lots: int = 2, ltp: str | None = None, *, expiry: bool = False
) -> SizedLeg:
    return SizedLeg(LegShape(number, "NIFTY", action, kind), lots, 65, D(ltp) if ltp else None, expiry)


def test_margin_of_a_pair_a_single_sell_futures_and_buys() -> None:
    rates = {"NIFTY": NIFTY_RATES}
    condor = [
        _leg(1, "BUY", "CE", ltp="12.50"),
        _leg(2, "BUY", "PE"),
        _leg(3, "SELL", "CE"),
        _leg(4, "SELL", "PE"),
    ]
    margins = estimate_margins(condor, rates)
    assert margins == {1: D("12.50") * 2 * 65, 2: D(40000), 3: D(320000), 4: D(320000)}
    # Only one type sold: the single-sell rate; on the contract's expiry day the expiry column.
    assert estimate_margins([_leg(1, "SELL", "CE", lots=1)], rates) == {1: D(250000)}
    assert estimate_margins([_leg(1, "SELL", "CE", lots=1, expiry=True)], rates) == {1: D(205000)}
    assert estimate_margins([_leg(1, "BUY", "FUT", lots=3)], rates) == {1: D(645000)}
    # No margin row: not estimated (None), never 0; a leg with 0 lots costs nothing.
    assert estimate_margins([_leg(1, "SELL", "CE")], {}) == {1: None}
    assert estimate_margins([_leg(1, "SELL", "CE", lots=0)], rates) == {1: D(0)}
