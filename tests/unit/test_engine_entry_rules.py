"""The entry path's pure rules: freeze slices per leg, and which orderbook rows can be an intent's
order when its send outcome is unknown."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from algomirror.broker.wire import BrokerOrder
from algomirror.engine.entry_records import EntryLeg, slice_quantities, strategy_tag
from algomirror.engine.order_driver import IntentRow, order_candidates

TODAY = date(2026, 11, 25)
LEG = EntryLeg(
    execution_id=7,
    leg_number=1,
    account_id=3,
    side="SELL",
    symbol="NIFTY01DEC2626000CE",
    exchange="NFO",
    product="NRML",
    planned_quantity=65,
    order_type="MARKET",
    price=None,
    trigger_price=None,
    status="pending",
    filled_quantity=0,
    entry_price=None,
    error=None,
)


@pytest.mark.parametrize(
    ("symbol", "quantity", "slices"),
    [
        ("NIFTY01DEC2626000CE", 65, [65]),
        ("NIFTY01DEC2626000CE", 1950, [1755, 195]),  # freeze 1,800, lot 65: slice 1,755
        ("NIFTY01DEC2626000CE", 3510, [1755, 1755]),
        ("RELIANCE", 10, [10]),  # not a derivative: one order
    ],
)
def test_slice_quantities_follow_the_freeze_rule(symbol: str, quantity: int, slices: list[int]) -> None:
    leg = replace(LEG, symbol=symbol, planned_quantity=quantity)
    assert slice_quantities(leg, TODAY) == slices
    assert sum(slice_quantities(leg, TODAY)) == quantity


def test_slice_quantities_of_an_unwind_use_the_filled_quantity() -> None:
    assert slice_quantities(replace(LEG, planned_quantity=1950), TODAY, quantity=130) == [130]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"planned_quantity": 100}, "not a positive multiple of the lot size"),
        ({"side": ""}, "no action"),
        ({"symbol": ""}, "no symbol"),
        ({"planned_quantity": 0}, "no symbol, exchange or quantity"),
    ],
)
def test_a_leg_that_cannot_be_sent_says_why(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        slice_quantities(replace(LEG, **change), TODAY)


def test_the_strategy_tag_is_stable_and_short() -> None:
    assert strategy_tag(42) == strategy_tag(42) == "AM-S42"
    assert len(strategy_tag(10**9)) <= 20


def _book_row(orderid: str, **fields: Any) -> BrokerOrder:
    row = {
        "orderid": orderid,
        "symbol": "NIFTY01DEC2626000CE",
        "exchange": "NFO",
        "action": "SELL",
        "quantity": "65",
        "price": "0",
        "trigger_price": "0",
        "pricetype": "MARKET",
        "product": "NRML",
        "order_status": "complete",
        "average_price": "101.5",
        "strategy": "AM-S1",
        "timestamp": "25-Nov-2026 10:30:00",
        **fields,
    }
    return BrokerOrder.parse_row(row)


INTENT = IntentRow(
    id=1,
    key="exec:7:entry:1",
    account_id=3,
    symbol="NIFTY01DEC2626000CE",
    exchange="NFO",
    product="NRML",
    side="SELL",
    quantity=65,
    order_type="MARKET",
    price=None,
    trigger_price=None,
    strategy_tag="AM-S1",
    state="unknown",
    order_id=None,
    filled_quantity=0,
    average_price=Decimal(0),
    rejection_reason=None,
)


def test_unknown_outcome_candidates_match_tag_symbol_side_quantity_and_skip_owned_orders() -> None:
    book = (
        _book_row("26112500000009"),
        _book_row("26112500000003"),  # owned by another intent
        _book_row("26112500000004", strategy="someone-else"),
        _book_row("26112500000005", action="BUY"),
        _book_row("26112500000006", quantity="130"),
        _book_row("26112500000007", symbol="NIFTY01DEC2626000PE"),
        _book_row("26112500000008", strategy=""),  # a broker whose book carries no tags
    )
    found = order_candidates(book, INTENT, owned={"26112500000003"})
    assert [o.orderid for o in found] == ["26112500000008", "26112500000009"]
