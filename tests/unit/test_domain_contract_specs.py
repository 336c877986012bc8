from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.contract_specs import (
    ContractSpecs,
    LotSizeRule,
    default_specs,
    freeze_qty,
    freeze_slices,
    last_weekday_of_month,
    lot_size,
)
from algomirror.domain.errors import InvalidQuantity, NoRuleInForce


@pytest.mark.parametrize(
    ("underlying", "expiry", "lot"),
    [
        ("NIFTY", date(2025, 12, 30), 75),
        ("NIFTY", date(2026, 1, 6), 65),
        ("NIFTY", date(2025, 9, 30), 75),
        ("BANKNIFTY", date(2025, 6, 26), 30),
        ("BANKNIFTY", date(2025, 7, 31), 35),
        ("BANKNIFTY", date(2025, 12, 30), 35),
        ("BANKNIFTY", date(2026, 1, 27), 30),
        ("SENSEX", date(2026, 1, 8), 20),
        ("FINNIFTY", date(2026, 1, 27), 60),
        ("MIDCPNIFTY", date(2025, 8, 26), 140),
        ("MIDCPNIFTY", date(2026, 1, 27), 120),
        ("BANKEX", date(2026, 1, 29), 30),
    ],
)
def test_lot_size_when_looked_up_by_expiry_uses_rule_in_force(
    underlying: str, expiry: date, lot: int
) -> None:
    assert lot_size(underlying, expiry) == lot


def test_lot_size_when_transition_both_lots_coexist_on_one_trading_day() -> None:
    # On 29 Dec 2025 the current weekly (30 Dec) is still 75 while the Jan 2026 contracts are 65.
    assert lot_size("NIFTY", date(2025, 12, 30)) == 75
    assert lot_size("NIFTY", date(2026, 1, 27)) == 65


def test_lot_size_when_no_rule_raises() -> None:
    specs = ContractSpecs(
        lot_sizes=[LotSizeRule("NIFTY", 65, date(2026, 1, 1), None)], freezes=[], expiry_rules=[]
    )
    with pytest.raises(NoRuleInForce):
        specs.lot_size("NIFTY", date(2025, 1, 1))
    with pytest.raises(NoRuleInForce):
        specs.freeze_qty("NIFTY", date(2025, 1, 1))


def test_freeze_when_looked_up_by_trading_day_returns_the_slab() -> None:
    assert freeze_qty("NIFTY", date(2026, 2, 2)) == 1800
    assert freeze_qty("BANKNIFTY", date(2025, 7, 15)) == 600
    assert freeze_qty("BANKNIFTY", date(2025, 9, 15)) == 900
    assert freeze_qty("BANKNIFTY", date(2026, 2, 2)) == 600
    assert freeze_qty("SENSEX", date(2026, 2, 2)) == 1000
    assert freeze_qty("FINNIFTY", date(2026, 2, 2)) == 1800
    assert freeze_qty("MIDCPNIFTY", date(2026, 2, 2)) == 2800
    assert freeze_qty("BANKEX", date(2026, 2, 2)) == 900


@pytest.mark.parametrize(
    ("quantity", "freeze", "lot", "slices"),
    [
        (6500, 1800, 65, [1755, 1755, 1755, 1235]),
        (1350, 600, 30, [600, 600, 150]),
        (2400, 1000, 20, [1000, 1000, 400]),
        (1755, 1800, 65, [1755]),
        (65, 1800, 65, [65]),
        (3600, 1800, 75, [1800, 1800]),
    ],
)
def test_slices_when_quantity_exceeds_freeze_split_into_lot_multiples(
    quantity: int, freeze: int, lot: int, slices: list[int]
) -> None:
    assert freeze_slices(quantity, freeze, lot) == slices


@pytest.mark.parametrize(
    ("quantity", "freeze", "lot"), [(100, 1800, 65), (0, 1800, 65), (-65, 1800, 65), (65, 60, 65)]
)
def test_slices_when_inputs_invalid_raise(quantity: int, freeze: int, lot: int) -> None:
    with pytest.raises(InvalidQuantity):
        freeze_slices(quantity, freeze, lot)


@given(
    lots=st.integers(1, 2000),
    lot=st.integers(1, 200),
    freeze_lots=st.integers(1, 100),
    extra=st.integers(0, 199),
)
def test_slices_when_any_valid_input_sum_to_quantity_within_freeze_as_lot_multiples(
    lots: int, lot: int, freeze_lots: int, extra: int
) -> None:
    freeze = freeze_lots * lot + extra % lot
    quantity = lots * lot
    slices = freeze_slices(quantity, freeze, lot)
    assert sum(slices) == quantity
    assert all(0 < s <= freeze and s % lot == 0 for s in slices)
    assert len(slices) == -(-quantity // ((freeze // lot) * lot))


def test_nominal_expiries_when_weekday_rule_changes_follow_each_rule() -> None:
    specs = default_specs()
    weekly = specs.nominal_expiries("NIFTY", "weekly", date(2025, 8, 18), date(2025, 9, 12))
    assert weekly == [date(2025, 8, 21), date(2025, 8, 28), date(2025, 9, 2), date(2025, 9, 9)]
    monthly = specs.nominal_expiries("BANKNIFTY", "monthly", date(2025, 7, 1), date(2025, 10, 31))
    assert monthly == [date(2025, 7, 31), date(2025, 8, 28), date(2025, 9, 30), date(2025, 10, 28)]
    sensex = specs.nominal_expiries("SENSEX", "monthly", date(2025, 8, 1), date(2025, 9, 30))
    assert sensex == [date(2025, 8, 26), date(2025, 9, 25)]


def test_weeklies_when_not_benchmark_index_absent_now() -> None:
    specs = default_specs()
    for name in ("BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "BANKEX"):
        assert specs.nominal_expiries(name, "weekly", date(2025, 1, 1), date(2026, 12, 31)) == []
        assert not specs.has_weeklies(name, date(2026, 1, 5))
    assert specs.has_weeklies("NIFTY", date(2026, 1, 5))
    assert specs.has_weeklies("SENSEX", date(2026, 1, 5))


def test_last_weekday_when_month_ends_midweek_returns_last_such_day() -> None:
    assert last_weekday_of_month(2025, 12, 1) == date(2025, 12, 30)
    assert last_weekday_of_month(2026, 2, 3) == date(2026, 2, 26)
