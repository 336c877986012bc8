"""The mirror_order payload check: what the web writes is accepted, anything else fails the command
before an order is recorded."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from algomirror.engine.execution import ExecutionError
from algomirror.engine.mirror import intent_key, mirror_tag, parse_request

GOOD: dict[str, Any] = {
    "symbol": "NIFTY01DEC2625500PE",
    "exchange": "NFO",
    "product": "NRML",
    "side": "SELL",
    "lots": 2,
    "order_type": "SL",
    "price": "120.50",
    "trigger_price": "121",
    "accounts": [{"account_id": 3, "multiplier": "0.5"}, {"account_id": 4, "multiplier": "2"}],
}


def test_good_payload() -> None:
    request = parse_request(GOOD)
    assert (request.side, request.lots, request.price, request.trigger_price) == (
        "SELL",
        2,
        Decimal("120.50"),
        Decimal("121"),
    )
    assert [(t.account_id, t.multiplier) for t in request.targets] == [(3, Decimal("0.5")), (4, Decimal(2))]
    assert parse_request({**GOOD, "order_type": "MARKET", "price": "x"}).price is None  # unused price ignored
    assert (mirror_tag(17), intent_key(17, 3, 2)) == ("AM-M17", "mirror:17:3:2")


@pytest.mark.parametrize(
    "change",
    [
        {"lots": True},
        {"lots": 0},
        {"quantity": -5},
        {"side": "HOLD"},
        {"order_type": "STOP"},
        {"product": "CNC"},
        {"price": None},
        {"trigger_price": "0"},
        {"accounts": []},
        {"accounts": [{"account_id": 3}, {"account_id": 3}]},
        {"accounts": [{"account_id": "3"}]},
        {"accounts": [{"account_id": 3, "multiplier": "-1"}]},
        {"symbol": ""},
    ],
)
def test_malformed_payload_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ExecutionError):
        parse_request({**GOOD, **change})
