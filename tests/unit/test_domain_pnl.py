from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.errors import InvalidFill
from algomirror.domain.pnl import ExecutionFills, Fill, Side, execution_pnl, run_pnl

D = Decimal


def fills(*pairs: tuple[int, str | None]) -> tuple[Fill, ...]:
    return tuple(Fill(q, None if p is None else D(p)) for q, p in pairs)


def ex(
    side: Side,
    entries: tuple[Fill, ...],
    exits: tuple[Fill, ...] = (),
    mark: str | None = None,
    *,
    run: int = 1,
    account: int = 10,
    leg: int = 100,
) -> ExecutionFills:
    return ExecutionFills(run, account, leg, side, entries, exits, None if mark is None else D(mark))


# --- one execution -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("execution", "realised", "unrealised", "total"),
    [
        # BUY 75 @ 100, LTP 110: +750 open
        (ex("BUY", fills((75, "100")), mark="110"), "0", "750.00", "750.00"),
        # SELL 75 @ 100, LTP 110: a short loses when the price rises
        (ex("SELL", fills((75, "100")), mark="110"), "0", "-750.00", "-750.00"),
        # SELL 150 in two slices (avg 100.50), half bought back at 90, rest marked at 95
        (
            ex("SELL", fills((75, "100"), (75, "101")), fills((75, "90")), mark="95"),
            "787.50",
            "412.50",
            "1200.00",
        ),
        # fully exited: flat, realised only, the mark is irrelevant (and may be missing)
        (ex("BUY", fills((65, "120.05")), fills((65, "130.10"))), "653.25", "0.00", "653.25"),
        # nothing filled (a failed or still-pending entry): a known 0, no mark needed
        (ex("BUY", ()), "0", "0", "0"),
        # an option exited worthless at 0 (closed externally at expiry)
        (ex("BUY", fills((30, "12.35")), fills((30, "0"))), "-370.50", "0", "-370.50"),
    ],
)
def test_execution_pnl_when_filled_follows_product_6_1(
    execution: ExecutionFills, realised: str, unrealised: str, total: str
) -> None:
    result = execution_pnl(execution)
    assert (result.realised, result.unrealised, result.total) == (D(realised), D(unrealised), D(total))
    assert result.is_known


def test_execution_pnl_when_averages_repeat_keeps_4dp_half_up_and_rounds_money_once() -> None:
    # 3 fills: avg = 300.10/3 = 100.03333… → 100.0333; value-based P&L is not rounded per fill
    result = execution_pnl(ex("BUY", fills((1, "100.05"), (1, "100.00"), (1, "100.05")), mark="100.0001"))
    assert result.entry_average == D("100.0333")
    assert result.unrealised == D("-0.10")  # 300.0003 − 300.10 = −0.0997
    # a half-paisa rounds away from zero (half up on the magnitude, like Money columns)
    half = execution_pnl(ex("BUY", fills((1, "10.0000")), mark="10.005"))
    assert half.total == D("0.01")
    assert execution_pnl(ex("SELL", fills((1, "10.0000")), mark="10.005")).total == D("-0.01")
    avg = execution_pnl(ex("BUY", fills((1, "1.00005"), (1, "1.00005"))))
    assert avg.entry_average == D("1.0001")


def test_execution_pnl_when_exiting_counts_open_units_at_mark_until_flat() -> None:
    entries = fills((600, "200"), (600, "200"), (150, "200"))
    part = execution_pnl(ex("SELL", entries, fills((600, "180")), mark="185"))
    assert (part.exit_quantity, part.open_quantity) == (600, 750)
    assert (part.realised, part.unrealised, part.total) == (D("12000.00"), D("11250.00"), D("23250.00"))
    assert part.exit_average == D("180.0000")
    flat = execution_pnl(ex("SELL", entries, fills((600, "180"), (750, "186"))))
    assert flat.is_flat and flat.total == D("12000") + D("10500")


@pytest.mark.parametrize("mark", [None, "0", "-1"])
def test_execution_pnl_when_open_units_have_no_usable_mark_is_unknown_not_zero(mark: str | None) -> None:
    result = execution_pnl(ex("SELL", fills((75, "100")), fills((25, "90")), mark=mark))
    assert result.total is None and result.unrealised is None and not result.is_known
    assert result.realised == D("250.00")  # what was exited is still known


def test_execution_pnl_when_a_fill_price_is_pending_unknown_where_it_matters() -> None:
    pending_entry = execution_pnl(ex("BUY", fills((75, "100"), (75, None)), mark="110"))
    assert pending_entry.total is None and pending_entry.entry_average is None
    pending_exit = execution_pnl(ex("BUY", fills((75, "100")), fills((75, None)), mark="110"))
    assert pending_exit.realised is None and pending_exit.unrealised == D("0") and pending_exit.total is None
    # an entry price pending with nothing open or exited cannot happen; nothing exited → realised known 0
    assert execution_pnl(ex("BUY", fills((75, None)), mark="110")).realised == D("0")


def test_execution_pnl_when_exits_exceed_entries_raises() -> None:
    with pytest.raises(InvalidFill, match="exceed"):
        execution_pnl(ex("BUY", fills((75, "100")), fills((150, "110"))))


@pytest.mark.parametrize(("quantity", "price"), [(0, "1"), (-75, "1"), (True, "1"), (75, "-0.05")])
def test_fill_when_quantity_or_price_invalid_raises(quantity: int, price: str) -> None:
    with pytest.raises(InvalidFill):
        Fill(quantity, D(price))
    with pytest.raises(InvalidFill):
        Fill(75, D("NaN"))
    with pytest.raises(InvalidFill):
        ExecutionFills(1, 1, 1, "SHORT", ())  # type: ignore[arg-type]


# --- a run ------------------------------------------------------------------------------------------------


def _straddle(run: int, account: int, ce_mark: str | None, pe_mark: str | None) -> list[ExecutionFills]:
    return [
        ex("SELL", fills((75, "120")), mark=ce_mark, run=run, account=account, leg=1),
        ex("SELL", fills((75, "110")), mark=pe_mark, run=run, account=account, leg=2),
    ]


def test_run_pnl_when_two_accounts_gives_aggregate_and_per_account_views() -> None:
    rows = [
        *_straddle(7, 10, "100", "115"),  # +1500 − 375 = +1125
        *_straddle(7, 11, "130", "105"),  # −750 + 375 = −375
        ex("BUY", fills((75, "10")), fills((75, "12")), run=7, account=11, leg=3),  # +150 realised
    ]
    result = run_pnl(rows, 7)
    assert result.aggregate.total == D("900.00")
    assert result.aggregate.realised == D("150.00") and result.aggregate.unrealised == D("750.00")
    assert {a: t.total for a, t in result.per_account.items()} == {10: D("1125.00"), 11: D("-225.00")}
    assert result.for_scope("aggregate") == {None: result.aggregate}
    assert result.for_scope("per_account") == result.per_account
    assert result.unknown == ()
    with pytest.raises(ValueError, match="scope"):
        result.for_scope("global")  # type: ignore[arg-type]


def test_run_pnl_when_other_runs_present_sums_the_current_run_only() -> None:
    yesterday = _straddle(6, 10, "300", "300")  # a big loss in the closed run
    today = _straddle(7, 10, "100", "100")
    result = run_pnl([*yesterday, *today], 7)
    assert result.aggregate.total == D("2250.00")
    assert all(r.run_id == 7 for r in result.executions)
    assert run_pnl(yesterday, 8).aggregate.total == D("0")


def test_run_pnl_when_one_mark_missing_run_and_that_account_unknown_others_known() -> None:
    rows = [*_straddle(7, 10, "100", None), *_straddle(7, 11, "100", "100")]
    result = run_pnl(rows, 7)
    assert result.aggregate.total is None and not result.aggregate.is_known
    assert result.per_account[10].total is None
    assert result.per_account[11].total == D("2250.00")
    assert [(r.account_id, r.leg_id) for r in result.unknown] == [(10, 2)]


def test_run_pnl_when_parts_round_sums_exact_values_then_rounds_once() -> None:
    # three executions of +0.004 each: per execution 0.00, the run 0.01 (0.012 rounded once)
    rows = [ex("BUY", fills((1, "10")), mark="10.004", leg=leg) for leg in (1, 2, 3)]
    result = run_pnl(rows, 1)
    assert [r.total for r in result.executions] == [D("0.00")] * 3
    assert result.aggregate.total == D("0.01")


# --- properties ------------------------------------------------------------------------------------------

_PRICES = st.decimals(min_value=0, max_value=50000, places=4)
_QTYS = st.integers(min_value=1, max_value=5000)
_FILLS = st.lists(st.builds(Fill, _QTYS, _PRICES), min_size=1, max_size=8)
_SIDES: st.SearchStrategy[Side] = st.sampled_from(("BUY", "SELL"))


@st.composite
def _execution(draw: st.DrawFn) -> tuple[Side, list[Fill], list[Fill]]:
    """An execution whose exits never exceed its entries (exit quantities are drawn from the entries)."""
    side = draw(_SIDES)
    entries = draw(_FILLS)
    total = sum(f.quantity for f in entries)
    exited = draw(st.integers(min_value=0, max_value=total))
    exits: list[Fill] = []
    left = exited
    while left:
        q = draw(st.integers(min_value=1, max_value=left))
        exits.append(Fill(q, draw(_PRICES)))
        left -= q
    return side, entries, exits


def _pnl(side: Side, entries: list[Fill], exits: list[Fill], mark: Decimal | None) -> Decimal | None:
    return execution_pnl(ExecutionFills(1, 1, 1, side, tuple(entries), tuple(exits), mark)).total


@given(data=_execution(), price=st.decimals(min_value=D("0.05"), max_value=50000, places=2))
def test_property_when_mark_equals_exit_price_total_is_sign_times_value_out_minus_in(
    data: tuple[Side, list[Fill], list[Fill]], price: Decimal
) -> None:
    side, entries, exits = data
    exits = [Fill(f.quantity, price) for f in exits]
    result = execution_pnl(ExecutionFills(1, 1, 1, side, tuple(entries), tuple(exits), price))
    value_in = sum((f.price * f.quantity for f in entries if f.price is not None), D(0))
    value_out = price * sum(f.quantity for f in entries)  # exited units at the price, open ones marked at it
    sign = 1 if side == "BUY" else -1
    assert result.total == (sign * (value_out - value_in)).quantize(D("0.01"), rounding="ROUND_HALF_UP")
    assert result.exact_realised is not None and result.exact_unrealised is not None
    assert result.exact_realised + result.exact_unrealised == sign * (value_out - value_in)


@given(data=_execution(), mark=_PRICES, cuts=st.lists(st.integers(min_value=1, max_value=4), max_size=8))
def test_property_splitting_fills_at_the_same_price_changes_nothing(
    data: tuple[Side, list[Fill], list[Fill]], mark: Decimal, cuts: list[int]
) -> None:
    side, entries, exits = data

    def split(rows: list[Fill]) -> list[Fill]:
        out: list[Fill] = []
        for i, f in enumerate(rows):
            parts = min(cuts[i % len(cuts)] if cuts else 1, f.quantity)
            sizes = [f.quantity // parts] * parts
            sizes[0] += f.quantity - sum(sizes)
            out.extend(Fill(q, f.price) for q in sizes)
        return out

    before = execution_pnl(ExecutionFills(1, 1, 1, side, tuple(entries), tuple(exits), mark))
    after = execution_pnl(ExecutionFills(1, 1, 1, side, tuple(split(entries)), tuple(split(exits)), mark))
    assert after == before


@given(data=_execution(), mark=_PRICES, rnd=st.randoms(use_true_random=False))
def test_property_order_of_fills_does_not_matter(
    data: tuple[Side, list[Fill], list[Fill]], mark: Decimal, rnd: random.Random
) -> None:
    side, entries, exits = data
    shuffled_in, shuffled_out = list(entries), list(exits)
    rnd.shuffle(shuffled_in)
    rnd.shuffle(shuffled_out)
    assert _pnl(side, shuffled_in, shuffled_out, mark) == _pnl(side, entries, exits, mark)


@given(side=_SIDES, entries=_FILLS, exit_price=_PRICES, marks=st.lists(st.none() | _PRICES, max_size=4))
def test_property_flat_execution_does_not_depend_on_the_mark(
    side: Side, entries: list[Fill], exit_price: Decimal, marks: list[Decimal | None]
) -> None:
    exits = [Fill(sum(f.quantity for f in entries), exit_price)]
    baseline = _pnl(side, entries, exits, None)
    assert baseline is not None
    assert all(_pnl(side, entries, exits, m) == baseline for m in marks)


@given(
    rows=st.lists(st.tuples(_execution(), st.none() | _PRICES, st.integers(1, 3)), min_size=1, max_size=6),
)
def test_property_unknown_propagates_to_account_and_run_and_known_sums(
    rows: list[tuple[tuple[Side, list[Fill], list[Fill]], Decimal | None, int]],
) -> None:
    executions = [
        ExecutionFills(1, account, leg, side, tuple(e), tuple(x), mark)
        for leg, ((side, e, x), mark, account) in enumerate(rows)
    ]
    result = run_pnl(executions, 1)
    unknown = [r for r in result.executions if r.total is None]
    assert result.unknown == tuple(unknown)
    for account, totals in result.per_account.items():
        mine = [r for r in result.executions if r.account_id == account]
        assert (totals.total is None) == any(r.total is None for r in mine)
    assert (result.aggregate.total is None) == bool(unknown)
    for r in unknown:
        assert r.open_quantity > 0  # only open units without a mark make it unknown here
    if not unknown:
        exact = sum((r.exact_realised or D(0)) + (r.exact_unrealised or D(0)) for r in result.executions)
        assert result.aggregate.total == D(exact).quantize(D("0.01"), rounding="ROUND_HALF_UP")
