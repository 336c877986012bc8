from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.risk import (
    LegLevels,
    TrailingState,
    advance_leg_trailing,
    advance_trailing,
    initial_trailing_stop,
    leg_hit,
    leg_levels,
    max_loss_fires,
    max_profit_fires,
    trailing_fires,
)

D = Decimal

# PRODUCT §6.4 example: 2 lots NIFTY (130 units)
BUYS = D("30") * 130 + D("25") * 130  # 3,900 + 3,250
SELLS = D("120") * 130 + D("110") * 130  # 15,600 + 14,300
BASE = abs(BUYS - SELLS)


# --- §6.3 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pnl", "loss", "profit"),
    [
        ("-4999", False, False),
        ("-4999.99", False, False),
        ("-5000", True, False),
        ("-5000.01", True, False),
        ("7999.99", False, False),
        ("8000", False, True),
        ("0", False, False),
    ],
)
def test_max_loss_and_profit_boundaries(pnl: str, loss: bool, profit: bool) -> None:
    assert max_loss_fires(D(pnl), D("5000")) is loss
    assert max_profit_fires(D(pnl), D("8000")) is profit


# --- §6.4 --------------------------------------------------------------------------------------------------


def test_worked_example_base_premium_and_initial_stop() -> None:
    assert abs(BUYS - SELLS) == D("22750")
    assert initial_trailing_stop("percentage", D("8"), base_premium=BASE, unit_quantity=130) == D("-1820.00")
    assert initial_trailing_stop("amount", D("3000"), base_premium=BASE, unit_quantity=130) == D("-3000.00")
    assert initial_trailing_stop("points", D("12"), base_premium=BASE, unit_quantity=130) == D("-1560.00")


def test_worked_example_table() -> None:
    state = TrailingState.armed(
        initial_trailing_stop("percentage", D("8"), base_premium=BASE, unit_quantity=130)
    )
    table = [
        ("-350", "0", "-1820", False),
        ("900", "900", "-920", False),
        ("2300", "2300", "480", False),
        ("1500", "2300", "480", False),
        ("450", "2300", "480", True),
    ]
    for pnl, peak, stop, fires in table:
        state = advance_trailing(state, D(pnl))
        assert (state.peak, state.level, trailing_fires(state, D(pnl))) == (D(peak), D(stop), fires), pnl


def test_amount_variant_does_not_exit_at_best_point() -> None:
    state = TrailingState.armed(
        initial_trailing_stop("amount", D("3000"), base_premium=BASE, unit_quantity=130)
    )
    for pnl in ("-350", "900", "2300", "1500"):
        state = advance_trailing(state, D(pnl))
        assert not trailing_fires(state, D(pnl))
    assert state.level == D("-700.00")
    assert trailing_fires(state, D("-700"))  # inclusive


def test_initial_stop_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="kind"):
        initial_trailing_stop("pct", D("1"), base_premium=BASE, unit_quantity=1)
    with pytest.raises(ValueError, match="value"):
        initial_trailing_stop("amount", D("-1"), base_premium=BASE, unit_quantity=1)
    with pytest.raises(ValueError, match="unit_quantity"):
        initial_trailing_stop("points", D("1"), base_premium=BASE, unit_quantity=-1)
    assert initial_trailing_stop("percentage", D("0"), base_premium=BASE, unit_quantity=1) == D("0.00")


def test_initial_stop_uses_absolute_premium_and_quantizes() -> None:
    assert initial_trailing_stop("percentage", D("3"), base_premium=D("-1000.5"), unit_quantity=1) == D(
        "-30.02"
    )


money = st.decimals(min_value=-100000, max_value=100000, places=2, allow_nan=False, allow_infinity=False)


@given(
    initial=st.decimals(min_value=-50000, max_value=0, places=2),
    pnls=st.lists(money, min_size=1, max_size=40),
)
def test_trailing_level_never_moves_down_and_fires_exactly_at_level(
    initial: Decimal, pnls: list[Decimal]
) -> None:
    state = TrailingState.armed(initial)
    best = D(0)
    for pnl in pnls:
        before = state
        state = advance_trailing(state, pnl)
        best = max(best, pnl)
        assert state.level >= before.level
        assert state.peak >= before.peak
        assert state.level >= initial
        assert state.level == initial + best  # trails the best P&L at the fixed distance |I|
        assert trailing_fires(state, pnl) is (pnl <= state.level)


# --- §6.6 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "kind", "value", "sl", "tp"),
    [
        ("BUY", "percentage", "10", "90.00", "110.00"),
        ("SELL", "percentage", "10", "110.00", "90.00"),
        ("BUY", "points", "15", "85.00", "115.00"),
        ("SELL", "points", "15", "115.00", "85.00"),
        ("BUY", "premium", "70", "70.00", "70.00"),
        ("SELL", "premium", "130", "130.00", "130.00"),
        ("BUY", "percentage", "33.333", "66.67", "133.33"),
    ],
)
def test_leg_levels_table(action: str, kind: str, value: str, sl: str, tp: str) -> None:
    levels = leg_levels(action, D("100"), sl_type=kind, sl_value=D(value), tp_type=kind, tp_value=D(value))
    assert levels == LegLevels(stop_loss=D(sl), target=D(tp))


def test_leg_levels_unset_and_errors() -> None:
    assert leg_levels("BUY", D("100"), sl_type=None, sl_value=None, tp_type="points", tp_value=None) == (
        LegLevels(None, None)
    )
    with pytest.raises(ValueError, match="action"):
        leg_levels("buy", D("1"), sl_type=None, sl_value=None, tp_type=None, tp_value=None)
    with pytest.raises(ValueError, match="type"):
        leg_levels("BUY", D("1"), sl_type="ticks", sl_value=D("1"), tp_type=None, tp_value=None)


@pytest.mark.parametrize(
    ("action", "ltp", "expected"),
    [
        ("BUY", "90", "stop_loss"),
        ("BUY", "89", "stop_loss"),
        ("BUY", "90.01", None),
        ("BUY", "110", "take_profit"),
        ("SELL", "110", "stop_loss"),
        ("SELL", "109.99", None),
        ("SELL", "90", "take_profit"),
        ("SELL", "80", "take_profit"),
    ],
)
def test_leg_hit(action: str, ltp: str, expected: str | None) -> None:
    levels = leg_levels(
        action, D("100"), sl_type="points", sl_value=D("10"), tp_type="points", tp_value=D("10")
    )
    assert leg_hit(action, D(ltp), levels) == expected


def test_leg_hit_checks_stop_loss_first() -> None:
    both = LegLevels(stop_loss=D("100"), target=D("100"))
    assert leg_hit("BUY", D("100"), both) == "stop_loss"
    assert leg_hit("SELL", D("100"), both) == "stop_loss"
    assert leg_hit("BUY", D("100"), LegLevels(None, None)) is None


def test_leg_trailing_examples() -> None:
    # BUY @100, trail 5 points, no SL: starts at 95, follows the best LTP
    best, sl = advance_leg_trailing(
        "BUY", best=None, ltp=D("101"), stop_loss=None, entry=D("100"), kind="points", value=D("5")
    )
    assert (best, sl) == (D("101"), D("96.00"))
    best, sl = advance_leg_trailing(
        "BUY", best=best, ltp=D("98"), stop_loss=sl, entry=D("100"), kind="points", value=D("5")
    )
    assert (best, sl) == (D("101"), D("96.00"))
    # SELL @100, trail 10 %, existing SL 108: best 90 -> 99
    best, sl = advance_leg_trailing(
        "SELL", best=None, ltp=D("90"), stop_loss=D("108"), entry=D("100"), kind="percentage", value=D("10")
    )
    assert (best, sl) == (D("90"), D("99.00"))
    # SELL with no SL and an adverse first tick starts at e + d
    best, sl = advance_leg_trailing(
        "SELL", best=None, ltp=D("104"), stop_loss=None, entry=D("100"), kind="percentage", value=D("10")
    )
    assert (best, sl) == (D("104"), D("110.00"))
    with pytest.raises(ValueError, match="kind"):
        advance_leg_trailing(
            "BUY", best=None, ltp=D("1"), stop_loss=None, entry=D("1"), kind="premium", value=D("1")
        )


prices = st.decimals(min_value=1, max_value=5000, places=2)


@given(
    action=st.sampled_from(["BUY", "SELL"]),
    kind=st.sampled_from(["points", "percentage"]),
    value=st.decimals(min_value=0, max_value=50, places=2),
    entry=prices,
    ltps=st.lists(prices, min_size=1, max_size=30),
    initial_sl=st.none() | prices,
)
def test_leg_trailing_never_moves_backwards(
    action: str, kind: str, value: Decimal, entry: Decimal, ltps: list[Decimal], initial_sl: Decimal | None
) -> None:
    best: Decimal | None = None
    sl = initial_sl
    for ltp in ltps:
        new_best, new_sl = advance_leg_trailing(
            action, best=best, ltp=ltp, stop_loss=sl, entry=entry, kind=kind, value=value
        )
        if action == "BUY":
            assert best is None or new_best >= best
            assert sl is None or new_sl >= sl
        else:
            assert best is None or new_best <= best
            assert sl is None or new_sl <= sl
        best, sl = new_best, new_sl
