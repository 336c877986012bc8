"""The official openalgo SDK (1.0.47) drives the order and account endpoints of the paper exchange.

Values are asserted, not only ``status``: fill prices against the quote at placement, books, positions,
funds arithmetic to the paisa.
"""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import pytest
from openalgo import api

from tests.sim_fixtures import SimHandle

CE = "NIFTY01DEC2626000CE"
PE = "NIFTY01DEC2626000PE"
FUT = "NIFTY29DEC26FUT"


@pytest.fixture
def sim(simulator_session: SimHandle) -> SimHandle:
    return simulator_session


@pytest.fixture
def client(sim: SimHandle) -> api:
    return api(api_key=sim.api_keys[0], host=sim.rest_url, ws_url=sim.ws_url, timeout=10)


def d(x: object) -> Decimal:
    return Decimal(str(x))


def test_ping_when_valid_key_answers_pong_with_broker_id(sim: SimHandle) -> None:
    r = httpx.post(sim.api_url + "/ping", json={"apikey": sim.api_keys[0]})
    assert r.status_code == 200
    assert r.json() == {"status": "success", "data": {"broker": "sandbox", "message": "pong"}}


def test_funds_when_fresh_account_shows_full_capital(client: api) -> None:
    r = client.funds()
    assert r["status"] == "success"
    assert d(r["data"]["availablecash"]) == Decimal("10000000.00")
    assert d(r["data"]["utiliseddebits"]) == 0
    assert r["data"]["collateral"] == 0


def test_placeorder_when_market_buy_fills_at_ask_and_books_agree(client: api) -> None:
    ask = d(client.quotes(symbol=CE, exchange="NFO")["data"]["ask"])
    r = client.placeorder(
        strategy="conf",
        symbol=CE,
        action="BUY",
        exchange="NFO",
        price_type="MARKET",
        product="NRML",
        quantity=65,
    )
    assert r["status"] == "success"
    orderid = r["orderid"]
    assert isinstance(orderid, str) and re.fullmatch(r"261125\d{8}", orderid)

    st = client.orderstatus(order_id=orderid, strategy="conf")["data"]
    assert st["order_status"] == "complete"
    assert st["filled_quantity"] == 65 and st["pending_quantity"] == 0
    assert d(st["average_price"]) == ask
    assert st["strategy"] == "conf" and st["price_type"] == "MARKET" and st["pricetype"] == "MARKET"
    assert re.fullmatch(r"2026-11-25 10:30:\d\d", st["timestamp"])

    trades = client.tradebook()["data"]
    assert len(trades) == 1
    assert trades[0]["orderid"] == orderid
    assert d(trades[0]["trade_value"]) == ask * 65
    assert trades[0]["tradeid"].startswith("TRADE-20261125-1030")

    pos = client.positionbook()["data"]
    assert [(p["symbol"], p["product"], p["quantity"]) for p in pos] == [(CE, "NRML", 65)]
    assert d(pos[0]["average_price"]) == ask
    assert client.openposition(strategy="conf", symbol=CE, exchange="NFO", product="NRML")["quantity"] == 65

    funds = client.funds()["data"]
    assert d(funds["utiliseddebits"]) == ask * 65  # a long option blocks its premium
    assert d(funds["availablecash"]) == Decimal("10000000") - ask * 65


def test_limit_order_when_not_marketable_rests_then_modify_and_cancel(client: api) -> None:
    r = client.placeorder(
        strategy="conf",
        symbol=PE,
        action="BUY",
        exchange="NFO",
        price_type="LIMIT",
        product="NRML",
        quantity=130,
        price="5",
    )
    orderid = r["orderid"]
    book = client.orderbook()["data"]
    row = next(o for o in book["orders"] if o["orderid"] == orderid)
    assert row["order_status"] == "open" and row["pending_quantity"] == 130 and row["price"] == 5.0
    assert book["statistics"]["total_open_orders"] == 1

    m = client.modifyorder(
        order_id=orderid,
        strategy="conf",
        symbol=PE,
        action="BUY",
        exchange="NFO",
        price_type="LIMIT",
        product="NRML",
        quantity=65,
        price="6.5",
    )
    assert m == {"status": "success", "orderid": orderid, "message": "Order modified successfully"}
    st = client.orderstatus(order_id=orderid, strategy="conf")["data"]
    assert (st["quantity"], st["price"]) == (65, 6.5)

    c = client.cancelorder(order_id=orderid, strategy="conf")
    assert c == {"status": "success", "orderid": orderid, "message": "Order cancelled successfully"}
    again = client.cancelorder(order_id=orderid, strategy="conf")
    assert again["code"] == 400 and "Cannot cancel order in cancelled status" in again["message"]
    mod = client.modifyorder(
        order_id=orderid,
        strategy="conf",
        symbol=PE,
        action="BUY",
        exchange="NFO",
        price_type="LIMIT",
        product="NRML",
        quantity=65,
        price="7",
    )
    assert mod["code"] == 400 and "Cannot modify order in cancelled status" in mod["message"]


def test_orderstatus_when_unknown_id_is_404_with_exact_text(client: api) -> None:
    r = client.orderstatus(order_id="26112599999999", strategy="conf")
    assert r["code"] == 404
    assert '"Order 26112599999999 not found"' in r["message"]


def test_placeorder_when_not_lot_multiple_is_400_with_exact_text(client: api) -> None:
    r = client.placeorder(
        strategy="conf", symbol=CE, action="BUY", exchange="NFO", product="NRML", quantity=75
    )
    assert r["code"] == 400
    assert '"Quantity must be in multiples of lot size 65"' in r["message"]


def test_placeorder_when_unknown_symbol_is_400(client: api) -> None:
    r = client.placeorder(strategy="conf", symbol="NOSUCH", action="BUY", exchange="NSE", quantity=1)
    assert r["code"] == 400 and "Symbol NOSUCH not found on NSE" in r["message"]


def test_placesmartorder_when_target_differs_trades_the_difference(client: api) -> None:
    r = client.placesmartorder(
        strategy="conf",
        symbol=FUT,
        action="BUY",
        exchange="NFO",
        product="NRML",
        quantity=65,
        position_size=65,
    )
    assert r["status"] == "success" and "orderid" in r
    r = client.placesmartorder(
        strategy="conf",
        symbol=FUT,
        action="BUY",
        exchange="NFO",
        product="NRML",
        quantity=65,
        position_size=-65,
    )
    assert r["status"] == "success"
    assert client.openposition(strategy="conf", symbol=FUT, exchange="NFO", product="NRML")["quantity"] == -65
    same = client.placesmartorder(
        strategy="conf",
        symbol=FUT,
        action="SELL",
        exchange="NFO",
        product="NRML",
        quantity=65,
        position_size=-65,
    )
    assert same == {"status": "success", "message": "Positions Already Matched. No Action needed."}
    funds = client.funds()["data"]
    assert d(funds["utiliseddebits"]) == Decimal(215000)  # one short futures lot


def test_splitorder_when_over_split_size_places_children_with_remainder(client: api) -> None:
    r = client.splitorder(
        strategy="conf", symbol=CE, action="BUY", exchange="NFO", quantity=325, splitsize=130, product="NRML"
    )
    assert r["status"] == "success" and r["total_quantity"] == 325 and r["split_size"] == 130
    assert [x["quantity"] for x in r["results"]] == [130, 130, 65]
    assert [x["order_num"] for x in r["results"]] == [1, 2, 3]
    assert all(x["status"] == "success" for x in r["results"])
    assert client.openposition(strategy="conf", symbol=CE, exchange="NFO", product="NRML")["quantity"] == 325


def test_splitorder_when_over_100_children_is_400(client: api) -> None:
    r = client.splitorder(
        strategy="conf",
        symbol=CE,
        action="BUY",
        exchange="NFO",
        quantity=65 * 102,
        splitsize=65,
        product="NRML",
    )
    assert r["code"] == 400 and "Total number of orders would exceed maximum limit of 100" in r["message"]


def test_basketorder_when_mixed_sides_places_buys_first(client: api) -> None:
    r = client.basketorder(
        strategy="conf",
        orders=[
            {
                "symbol": PE,
                "exchange": "NFO",
                "action": "SELL",
                "quantity": 65,
                "pricetype": "MARKET",
                "product": "NRML",
            },
            {
                "symbol": "NIFTY01DEC2625500PE",
                "exchange": "NFO",
                "action": "BUY",
                "quantity": 65,
                "pricetype": "MARKET",
                "product": "NRML",
            },
        ],
    )
    assert r["status"] == "success"
    assert [x["symbol"] for x in r["results"]] == ["NIFTY01DEC2625500PE", PE]
    assert all(x["status"] == "success" and x["product"] == "NRML" for x in r["results"])
    ids = [x["orderid"] for x in r["results"]]
    assert ids[0] < ids[1]
    # The short put is covered by the long put: hedge benefit instead of the full ₹2,50,000.
    funds = client.funds()["data"]
    trades = client.tradebook()["data"]
    assert [t["action"] for t in trades] == ["SELL", "BUY"]  # newest first
    long_premium = Decimal(str(trades[1]["trade_value"]))
    assert d(funds["utiliseddebits"]) == long_premium + Decimal(62500)


def test_cancelall_and_closeposition_when_positions_open_flatten_account(client: api) -> None:
    client.placeorder(strategy="conf", symbol=CE, action="BUY", exchange="NFO", product="MIS", quantity=65)
    client.placeorder(
        strategy="conf",
        symbol=PE,
        action="BUY",
        exchange="NFO",
        price_type="LIMIT",
        price="1",
        product="MIS",
        quantity=65,
    )
    client.placeorder(
        strategy="conf",
        symbol=PE,
        action="SELL",
        exchange="NFO",
        price_type="SL-M",
        trigger_price="1",
        product="MIS",
        quantity=65,
    )
    r = client.cancelallorder(strategy="ignored")
    assert r["message"] == "Canceled 2 orders. Failed to cancel 0 orders."
    assert len(r["canceled_orders"]) == 2 and r["failed_cancellations"] == []
    c = client.closeposition(strategy="conf")
    assert c["message"] == "Closed 1 positions" and c["closed_positions"] == 1 and c["failed_closures"] == 0
    pos = client.positionbook()["data"]
    assert [p["quantity"] for p in pos] == [0]  # the flat row stays for the day
    closing = client.orderbook()["data"]["orders"][0]
    assert closing["strategy"] == "AUTO_SQUARE_OFF" and closing["action"] == "SELL"
    funds = client.funds()["data"]
    realised = d(pos[0]["today_realized_pnl"])
    assert d(funds["availablecash"]) == Decimal("10000000") + realised
    assert d(funds["utiliseddebits"]) == 0


def test_closeposition_when_extra_field_is_unknown_field(client: api) -> None:
    r = client.closeposition(strategy="conf", symbol=CE)
    assert r["code"] == 400 and "Unknown field." in r["message"]


def test_holdings_when_no_equity_is_empty_with_statistics(client: api) -> None:
    r = client.holdings()
    assert r["data"]["holdings"] == []
    assert set(r["data"]["statistics"]) == {
        "totalholdingvalue",
        "totalinvvalue",
        "totalprofitandloss",
        "totalpnlpercentage",
    }


def test_accounts_when_two_keys_are_isolated(sim: SimHandle) -> None:
    a = api(api_key=sim.api_keys[0], host=sim.rest_url)
    b = api(api_key=sim.api_keys[1], host=sim.rest_url)
    orderid = a.placeorder(
        strategy="iso", symbol=CE, action="BUY", exchange="NFO", product="NRML", quantity=65
    )["orderid"]
    assert b.orderbook()["data"]["orders"] == []
    assert b.orderstatus(order_id=orderid, strategy="iso")["code"] == 404
    assert d(b.funds()["data"]["availablecash"]) == Decimal("10000000")


def test_any_endpoint_when_bad_key_is_403_with_exact_body(sim: SimHandle) -> None:
    bad = api(api_key="f" * 64, host=sim.rest_url)
    for result in (bad.funds(), bad.orderbook(), bad.quotes(symbol="NIFTY", exchange="NSE_INDEX")):
        assert result["code"] == 403
        assert result["message"] == 'HTTP 403: {"status": "error", "message": "Invalid openalgo apikey"}'


def test_analyzerstatus_when_asked_reports_analyze_mode(client: api) -> None:
    assert client.analyzerstatus()["data"] == {"analyze_mode": True, "mode": "analyze", "total_logs": 0}
    assert client.analyzertoggle(False)["code"] == 400
