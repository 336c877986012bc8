"""forward_fields: an orderstatus report never moves our order row backwards."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from algomirror.broker.wire import BrokerOrder
from algomirror.db.models import Order
from algomirror.engine.book_mirror import forward_fields


def reported(status: str, **fields: Any) -> BrokerOrder:
    row = {"orderid": "1", "symbol": "SBIN", "order_status": status, "quantity": "10", **fields}
    return BrokerOrder.parse_row(row, "orderstatus")


def ours(status: str, filled: int = 0, average: str | None = None) -> Order:
    return Order(
        status=status,
        quantity=10,
        filled_quantity=filled,
        pending_quantity=10 - filled,
        average_price=None if average is None else Decimal(average),
    )


def test_forward_fields_when_row_terminal_and_report_working_or_other_terminal_writes_nothing() -> None:
    assert forward_fields(ours("complete", 10, "101.25"), reported("open")) is None
    assert forward_fields(ours("complete", 10, "101.25"), reported("trigger pending")) is None
    assert forward_fields(ours("cancelled"), reported("complete", filled_quantity="10")) is None
    assert forward_fields(ours("rejected"), reported("unknown-garbage")) is None


def test_forward_fields_when_report_has_smaller_fill_writes_nothing() -> None:
    assert forward_fields(ours("open", 6, "100.5"), reported("open", filled_quantity="2")) is None


def test_forward_fields_when_report_omits_average_or_fill_keeps_known_values() -> None:
    changes = forward_fields(ours("complete", 10, "101.2575"), reported("complete"))
    assert changes is not None
    assert (changes["status"], changes["filled_quantity"]) == ("complete", 10)
    assert changes["average_price"] == Decimal("101.2575")
    assert changes["pending_quantity"] == 0


def test_forward_fields_when_report_is_newer_moves_forward() -> None:
    changes = forward_fields(
        ours("open", 4, "100"),
        reported("complete", filled_quantity="10", pending_quantity="0", average_price="100.3"),
    )
    assert changes is not None
    assert (changes["status"], changes["filled_quantity"], changes["pending_quantity"]) == ("complete", 10, 0)
    assert changes["average_price"] == Decimal("100.3")
    unknown = forward_fields(ours("open"), reported("weird"))
    assert unknown is not None and unknown["status"] == "open"
