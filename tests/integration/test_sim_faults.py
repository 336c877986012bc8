"""Every control-API fault, observed the way a client sees it (the SDK, or raw HTTP/WS where it hides it)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openalgo import api
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.helpers import eventually
from tests.sim_fixtures import SimHandle

CE = "NIFTY01DEC2626000CE"


@pytest.fixture
def sim(simulator_session: SimHandle) -> SimHandle:
    return simulator_session


def sdk(sim: SimHandle, timeout: float = 10.0, index: int = 0) -> api:
    return api(api_key=sim.api_keys[index], host=sim.rest_url, ws_url=sim.ws_url, timeout=timeout)


def buy(client: api, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = client.placeorder(
        strategy="fault", symbol=CE, action="BUY", exchange="NFO", product="NRML", quantity=65, **extra
    )
    return result


def test_reject_next_when_sync_is_400_with_orderid_and_rejected_row(sim: SimHandle) -> None:
    client = sdk(sim)
    sim.control.reject_next(1, "RMS: Margin Exceeds")
    r = buy(client)
    assert r["code"] == 400 and "RMS: Margin Exceeds" in r["message"]
    body = json.loads(r["message"].removeprefix("HTTP 400: "))
    row = client.orderstatus(order_id=body["orderid"], strategy="fault")["data"]
    assert row["order_status"] == "rejected" and row["rejection_reason"] == "RMS: Margin Exceeds"
    assert buy(client)["status"] == "success"  # only the next one


def test_reject_next_when_async_is_accepted_then_rejected(sim: SimHandle) -> None:
    client = sdk(sim)
    sim.control.reject_next(1, "Exchange: price band", mode="async")
    r = buy(client)
    assert r["status"] == "success"
    row = client.orderstatus(order_id=r["orderid"], strategy="fault")["data"]
    assert (row["order_status"], row["rejection_reason"]) == ("rejected", "Exchange: price band")
    assert client.positionbook()["data"] == []


def test_reject_next_when_scoped_to_one_key_other_accounts_trade(sim: SimHandle) -> None:
    sim.control.reject_next(1, "only account 2", apikey=sim.api_keys[1])
    assert buy(sdk(sim, index=0))["status"] == "success"
    assert buy(sdk(sim, index=1))["code"] == 400


def test_latency_when_set_on_quotes_delays_only_quotes(sim: SimHandle) -> None:
    client = sdk(sim)
    sim.control.latency(400, endpoint="quotes")
    t0 = time.monotonic()
    assert client.quotes(symbol="NIFTY", exchange="NSE_INDEX")["status"] == "success"
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    client.funds()
    fast = time.monotonic() - t0
    assert slow >= 0.4 and fast < 0.4


def test_ratelimit_next_when_armed_answers_429_exact_body_then_recovers(sim: SimHandle) -> None:
    sim.control.rate_limit_next(2, endpoint="placeorder")
    for _ in range(2):
        r = httpx.post(sim.api_url + "/placeorder", json={"apikey": sim.api_keys[0]})
        assert r.status_code == 429 and r.json() == {"message": "10 per 1 second"}
        assert "retry-after" not in r.headers
    assert buy(sdk(sim))["status"] == "success"
    assert sdk(sim).orderbook()["data"]["statistics"]["total_buy_orders"] == 1  # 429s executed nothing


def test_real_rate_limit_when_11_orders_in_a_second_refuses_the_11th(sim: SimHandle) -> None:
    body = {
        "apikey": sim.api_keys[0],
        "strategy": "rl",
        "symbol": CE,
        "exchange": "NFO",
        "action": "BUY",
        "quantity": "65",
        "pricetype": "LIMIT",
        "price": "1",
        "product": "NRML",
    }
    with httpx.Client() as http:
        codes = [http.post(sim.api_url + "/placeorder", json=body).status_code for _ in range(11)]
        other = http.post(sim.api_url + "/placeorder", json={**body, "apikey": sim.api_keys[1]})
    assert codes[:10] == [200] * 10 and codes[10] == 429
    assert other.status_code == 200  # counted per API key


def test_status_next_when_500_then_403_client_sees_codes(sim: SimHandle) -> None:
    client = sdk(sim)
    sim.control.status_next(500, endpoint="funds")
    sim.control.status_next(403, endpoint="funds")
    assert client.funds()["code"] == 500
    r = client.funds()
    assert r["code"] == 403 and "Invalid openalgo apikey" in r["message"]
    assert client.funds()["status"] == "success"


def test_hang_when_execute_true_times_out_but_order_is_placed(sim: SimHandle) -> None:
    sim.control.hang_next(1, seconds=3, execute=True, endpoint="placeorder")
    r = buy(sdk(sim, timeout=0.5))
    assert r["error_type"] == "timeout_error"
    orders = sdk(sim).orderbook()["data"]["orders"]
    assert [o["order_status"] for o in orders] == ["complete"]


def test_hang_when_execute_false_times_out_and_nothing_is_placed(sim: SimHandle) -> None:
    sim.control.hang_next(1, seconds=3, execute=False, endpoint="placeorder")
    assert buy(sdk(sim, timeout=0.5))["error_type"] == "timeout_error"
    assert sdk(sim).orderbook()["data"]["orders"] == []


def test_partial_fill_when_armed_leaves_order_open_until_next_tick(sim: SimHandle) -> None:
    client = sdk(sim)
    sim.control.partial_fill(1, 0.5)
    r = client.placeorder(
        strategy="pf", symbol=CE, action="BUY", exchange="NFO", product="NRML", quantity=260
    )
    st = client.orderstatus(order_id=r["orderid"], strategy="pf")["data"]
    assert (st["order_status"], st["filled_quantity"], st["pending_quantity"]) == ("open", 130, 130)
    assert client.openposition(strategy="pf", symbol=CE, exchange="NFO", product="NRML")["quantity"] == 130
    sim.control.advance(2)
    st = client.orderstatus(order_id=r["orderid"], strategy="pf")["data"]
    assert (st["order_status"], st["filled_quantity"]) == ("complete", 260)
    trades = [t for t in client.tradebook()["data"] if t["orderid"] == r["orderid"]]
    assert sorted(t["quantity"] for t in trades) == [130, 130]


def test_cancel_fill_when_armed_acknowledges_cancel_but_order_fills(sim: SimHandle) -> None:
    client = sdk(sim)
    sim.control.cancel_fill(1, apikey=sim.api_keys[0])
    r = buy(client, pricetype="LIMIT", price="5")
    assert client.orderstatus(order_id=r["orderid"], strategy="fault")["data"]["order_status"] == "open"
    ack = client.cancelorder(order_id=r["orderid"], strategy="fault")
    assert ack["status"] == "success" and ack["orderid"] == r["orderid"]
    st = client.orderstatus(order_id=r["orderid"], strategy="fault")["data"]
    assert (st["order_status"], st["filled_quantity"], float(st["average_price"])) == ("complete", 65, 5.0)
    assert [t["quantity"] for t in client.tradebook()["data"] if t["orderid"] == r["orderid"]] == [65]
    other = buy(client, pricetype="LIMIT", price="5")
    assert client.cancelorder(order_id=other["orderid"], strategy="fault")["status"] == "success"
    st = client.orderstatus(order_id=other["orderid"], strategy="fault")["data"]
    assert st["order_status"] == "cancelled"  # only the next cancel


def test_ws_drop_when_requested_closes_sdk_connection(sim: SimHandle) -> None:
    client = sdk(sim)
    assert client.connect()
    try:
        assert sim.control.ws_drop() >= 1
        eventually(lambda: not client.connected, what="SDK sees the drop")
    finally:
        client.disconnect()


@contextlib.contextmanager
def _subscribed(sim: SimHandle) -> Iterator[ClientConnection]:
    with connect(sim.ws_url, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "authenticate", "api_key": sim.api_keys[0]}))
        json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"action": "subscribe", "symbol": "NIFTY", "exchange": "NSE_INDEX", "mode": 1}))
        json.loads(ws.recv(timeout=5))  # ack
        json.loads(ws.recv(timeout=5))  # snapshot
        yield ws


def test_ws_silent_when_enabled_connection_stays_but_ticks_stop(sim: SimHandle) -> None:
    with _subscribed(sim) as ws:
        sim.control.ws_silent(True)
        sim.control.advance(3)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        ws.send(json.dumps({"action": "ping", "timestamp": 1}))
        assert json.loads(ws.recv(timeout=5))["type"] == "pong"  # still connected
        sim.control.ws_silent(False)
        sim.control.advance(1)
        assert json.loads(ws.recv(timeout=5))["type"] == "market_data"


def test_ws_zero_and_stale_ticks_when_armed_are_delivered(sim: SimHandle) -> None:
    with _subscribed(sim) as ws:
        sim.control.ws_zero_ticks(1)
        sim.control.advance(1)
        assert json.loads(ws.recv(timeout=5))["data"]["ltp"] == 0.0
        sim.control.ws_stale_ticks(1, age_seconds=300)
        now_ms = int(sim.control.advance(1).timestamp() * 1000)
        stale = json.loads(ws.recv(timeout=5))["data"]
        assert stale["ltp"] > 0 and now_ms - stale["timestamp"] == 300_000


def test_ws_no_auth_reply_when_armed_sdk_connect_fails(sim: SimHandle) -> None:
    sim.control.ws_no_auth_reply(1)
    with connect(sim.ws_url, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "authenticate", "api_key": sim.api_keys[0]}))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)


def test_reset_when_called_clears_books_faults_and_funds(sim: SimHandle) -> None:
    client = sdk(sim)
    buy(client)
    sim.control.reject_next(5)
    sim.control.reset()
    assert client.orderbook()["data"]["orders"] == []
    assert client.funds()["data"]["availablecash"] == 10_000_000.0
    assert buy(client)["status"] == "success"


def test_control_when_bad_input_is_400_not_500(sim: SimHandle) -> None:
    for path, body in [
        ("/price", {"symbol": "NOPE", "exchange": "NFO", "price": 1}),
        ("/price", {"symbol": "NIFTY", "exchange": "NSE_INDEX", "price": 0}),
        ("/faults/reject", {"count": "x"}),
        ("/clock/advance", {"seconds": -1}),
        ("/ramp", {"symbol": CE, "exchange": "NFO", "target": 1, "seconds": 5}),
    ]:
        r = httpx.post(sim.rest_url + "/sim" + path, json=body, headers=sim.control_headers)
        assert r.status_code == 400, (path, r.text)


def test_ws_drop_when_raw_client_sees_close_code(sim: SimHandle) -> None:
    with _subscribed(sim) as ws:
        sim.control.ws_drop()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
