"""Reconciliation's comparison rules (engine/reconcile.py), without a broker: which differences the
journal explains and how an unexplained one is classified (closed outside vs extra quantity)."""

from __future__ import annotations

import pytest

from algomirror.broker.wire import BrokerPosition, Positionbook
from algomirror.engine.reconcile import Gap, Reconciler, _Intent, _Ours, compare_positions

KEY = ("NIFTY01DEC2625800PE", "NFO", "NRML")


def _intent(side: str, quantity: int, filled: int, state: str, n: int = 1) -> _Intent:
    return _Intent(n, 10, KEY, side, quantity, filled, state, f"o{n}", "AM-S1")


@pytest.mark.parametrize(
    ("ours", "broker", "missing"),
    [
        (-65, 0, True),  # a short bought back outside
        (65, 0, True),  # a hedge sold outside
        (65, 30, True),  # part of it
        (-65, 65, True),  # reversed
        (-65, -130, False),  # more short at the broker: manual trades
        (65, 195, False),
        (0, 65, False),  # nothing of ours open, something at the broker
    ],
)
def test_a_gap_is_missing_when_our_position_shrank_vanished_or_reversed(
    ours: int, broker: int, missing: bool
) -> None:
    assert Gap(*KEY, ours=ours, broker=broker, low=ours, high=ours).missing is missing


def test_a_fill_the_executions_have_not_recorded_is_explained_by_the_journal() -> None:
    # The SELL entry filled at the broker, its intent says acknowledged with nothing filled yet.
    ours = _Ours({}, (_intent("SELL", 65, 0, "acknowledged"),), ())
    [gap] = compare_positions(ours, {KEY: -65})[0]
    assert (gap.low, gap.high, gap.explained) == (-65, 0, True)
    # More than the intent could have filled is not explained.
    [gap] = compare_positions(ours, {KEY: -130})[0]
    assert not gap.explained


def test_a_finished_exit_not_yet_written_on_the_execution_is_explained() -> None:
    entry = _intent("SELL", 65, 65, "complete", 1)
    exit_ = _intent("BUY", 65, 65, "complete", 2)
    ours = _Ours({KEY: -65}, (entry, exit_), ())
    [gap] = compare_positions(ours, {KEY: 0})[0]
    assert gap.explained
    # Without the exit's evidence the same broker figure is a position closed outside.
    [gap] = compare_positions(_Ours({KEY: -65}, (entry,), ()), {KEY: 0})[0]
    assert not gap.explained and gap.missing


def test_matching_keys_are_no_gap_and_other_symbols_are_untracked() -> None:
    other = ("RELIANCE", "NSE", "CNC")
    gaps, untracked = compare_positions(_Ours({KEY: -65}, (), ()), {KEY: -65, other: 10})
    assert gaps == [] and untracked == {other: 10}


def test_a_position_row_without_a_readable_quantity_makes_the_book_unknown() -> None:
    book = Positionbook(
        positions=(
            BrokerPosition(KEY[0], "NFO", "NRML", quantity=-65, average_price=None, ltp=None, pnl=None),
            BrokerPosition("NIFTY01DEC2625500PE", "NFO", "NRML", None, None, None, None),
        )
    )
    net, malformed = Reconciler._net_positions(book)
    assert net == {} and malformed is not None and "NIFTY01DEC2625500PE" in malformed
    net, malformed = Reconciler._net_positions(Positionbook(positions=book.positions[:1]))
    assert net == {KEY: -65} and malformed is None
