"""Mirror order sizing and the mirror check's drift classification (pure)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from algomirror.domain.mirror import (
    account_lots,
    classify,
    compare,
    net_of_others,
    order_slices,
    parse_multiplier,
)

SYMBOL = "NIFTY01DEC2625500PE"  # lot 65, freeze 1800 in Nov 2026
DAY = date(2026, 11, 25)


@pytest.mark.parametrize(
    ("lots", "multiplier", "cap", "expected"),
    [(3, "1", 100, 3), (3, "2", 100, 6), (3, "0.5", 100, 1), (1, "0.5", 100, 0), (10, "3", 20, 20)],
)
def test_account_lots_round_down_and_cap(lots: int, multiplier: str, cap: int, expected: int) -> None:
    sized = account_lots(lots, Decimal(multiplier), cap)
    assert sized.lots == expected
    capped = lots * Decimal(multiplier) > cap
    assert sized.capped == capped
    assert (sized.reason is not None) == (expected == 0 or capped)


@pytest.mark.parametrize("text", ["abc", "-1", "101", "0.00001", "NaN", "Infinity"])
def test_parse_multiplier_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_multiplier(text)


def test_order_slices() -> None:
    assert order_slices(SYMBOL, 1950, DAY) == [1755, 195]
    assert order_slices(SYMBOL, 30, DAY) == [30]  # part of a lot, within the freeze quantity
    with pytest.raises(ValueError):
        order_slices(SYMBOL, 1801, DAY)
    with pytest.raises(ValueError):
        order_slices("RELIANCE", 10, DAY)


def test_classify() -> None:
    assert classify(65, 65) == "ok"
    assert classify(65, 0) == "missing"
    assert classify(0, -65) == "extra"
    assert classify(-130, -65) == "different"
    assert classify(65, None) == "unknown"


def test_compare_only_run_symbols_are_extras_and_acceptance_is_exact() -> None:
    key = (1, SYMBOL, "NFO", "NRML")
    other = (1, "NIFTY01DEC2626000CE", "NFO", "NRML")
    broker = {1: {(SYMBOL, "NFO", "NRML"): -65, ("BANKNIFTY", "NFO", "NRML"): 30}, 2: None}
    rows = compare(
        {key: -130, other: 65, (2, SYMBOL, "NFO", "NRML"): -65},
        broker,
        run_symbols={(SYMBOL, "NFO"), ("NIFTY01DEC2626000CE", "NFO")},
        accepted=[(key, -65, -130)],
    )
    kinds = {(r.account_id, r.symbol): (r.kind, r.accepted) for r in rows}
    assert kinds == {
        (1, SYMBOL): ("different", True),
        (1, "NIFTY01DEC2626000CE"): ("missing", False),
        (2, SYMBOL): ("unknown", False),
    }
    again = compare(
        {key: -130},
        {1: {(SYMBOL, "NFO", "NRML"): -195}},
        run_symbols={(SYMBOL, "NFO")},
        accepted=[(key, -65, -130)],
    )
    assert [(r.kind, r.accepted, r.difference, r.correction_side) for r in again] == [
        ("different", False, 65, "BUY")
    ]


def test_net_of_others_leaves_this_runs_share() -> None:
    key = (SYMBOL, "NFO", "NRML")
    broker = {1: {key: 130, ("X", "NFO", "NRML"): 5}, 2: None}
    others = {
        (1, SYMBOL, "NFO", "NRML"): 65,
        (1, "OTHER", "NFO", "NRML"): -30,
        (2, SYMBOL, "NFO", "NRML"): 65,
    }
    netted = net_of_others(broker, others)
    assert netted == {1: {key: 65, ("X", "NFO", "NRML"): 5, ("OTHER", "NFO", "NRML"): 30}, 2: None}
    assert broker[1] == {key: 130, ("X", "NFO", "NRML"): 5}, "the input is not changed"
    # Only the other run holds the symbol: this run's share is 0, not an extra.
    rows = compare({}, {1: {key: 0}}, run_symbols={(SYMBOL, "NFO")})
    assert rows == []
