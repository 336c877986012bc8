"""The SDK's WebSocket feed against the paper exchange, plus raw-protocol checks the SDK hides."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openalgo import api
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.helpers import eventually
from tests.sim_fixtures import SimHandle

CE = "NIFTY01DEC2626000CE"
PE = "NIFTY01DEC2626000PE"


@pytest.fixture
def feed(simulator_session: SimHandle) -> Iterator[api]:
    s = simulator_session
    client = api(api_key=s.api_keys[0], host=s.rest_url, ws_url=s.ws_url)
    assert client.connect() is True
    try:
        yield client
    finally:
        client.disconnect()


def raw(url: str) -> ClientConnection:
    return connect(url, open_timeout=5, close_timeout=2)


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return data


def auth(ws: ClientConnection, key: str) -> dict[str, Any]:
    ws.send(json.dumps({"action": "authenticate", "api_key": key}))
    return recv_json(ws)


def test_sdk_ltp_when_clock_advances_receives_moving_index(feed: api, simulator_session: SimHandle) -> None:
    got: list[dict[str, Any]] = []
    feed.subscribe_ltp([{"exchange": "NSE_INDEX", "symbol": "NIFTY"}], on_data_received=got.append)
    eventually(lambda: got, what="snapshot tick")
    simulator_session.control.set_price("NIFTY", "NSE_INDEX", 26222.2)
    eventually(
        lambda: feed.get_ltp()["ltp"]["NSE_INDEX"]["NIFTY"]["ltp"] == 26222.2, what="forced price tick"
    )
    before = len(got)
    simulator_session.control.advance(5)
    eventually(lambda: len(got) >= before + 5, what="one tick per simulated second")
    assert all(t["mode"] == 1 and t["type"] == "market_data" for t in got)
    stamps = [t["data"]["timestamp"] for t in got[before:]]
    assert stamps == sorted(stamps)


def test_sdk_quote_when_option_subscribed_receives_quote_fields(
    feed: api, simulator_session: SimHandle
) -> None:
    feed.subscribe_quote([{"exchange": "NFO", "symbol": CE}])
    simulator_session.control.advance(3)

    def quote() -> dict[str, Any]:
        return feed.get_quotes()["quote"]["NFO"][CE]

    q = eventually(quote, what="quote tick")
    assert q["ltp"] > 0 and q["high"] >= q["low"] > 0 and q["close"] > 0
    assert q["volume"] > 0


def test_sdk_depth_when_subscribed_receives_five_levels(feed: api, simulator_session: SimHandle) -> None:
    feed.subscribe_depth([{"exchange": "NFO", "symbol": PE}])
    simulator_session.control.advance(2)
    book = eventually(lambda: feed.get_depth()["depth"]["NFO"][PE], what="depth tick")
    assert len(book["buyBook"]) == 5 and len(book["sellBook"]) == 5
    assert 0 < book["buyBook"]["1"]["price"] < book["sellBook"]["1"]["price"]
    assert book["buyBook"]["1"]["qty"] > 0 and book["buyBook"]["1"]["orders"] > 0


def test_raw_subscribe_when_mixed_symbols_acks_partial_with_labels(simulator_session: SimHandle) -> None:
    with raw(simulator_session.ws_url) as ws:
        assert auth(ws, simulator_session.api_keys[0])["type"] == "auth"
        ws.send(
            json.dumps(
                {
                    "action": "subscribe",
                    "mode": 3,
                    "depth": 5,
                    "request_id": "r1",
                    "symbols": [{"symbol": CE, "exchange": "NFO"}, {"symbol": "BAD", "exchange": "NFO"}],
                }
            )
        )
        ack = recv_json(ws)
        assert ack["type"] == "subscribe" and ack["status"] == "partial" and ack["request_id"] == "r1"
        assert ack["subscriptions"][0] == {
            "symbol": CE,
            "exchange": "NFO",
            "status": "success",
            "mode": "Depth",
            "depth": 5,
        }
        assert ack["subscriptions"][1]["message"] == "Token not found for BAD on NFO"
        tick = recv_json(ws)
        assert tick["mode"] == 3 and isinstance(tick["mode"], int)
        assert (
            len(tick["data"]["depth"]["buy"]) == 5
            and tick["data"]["upper_circuit"] > tick["data"]["lower_circuit"]
        )


def test_raw_fanout_when_two_clients_different_modes_each_gets_own_label(
    simulator_session: SimHandle,
) -> None:
    s = simulator_session
    with raw(s.ws_url) as a, raw(s.ws_url) as b:
        auth(a, s.api_keys[0])
        auth(b, s.api_keys[1])
        a.send(json.dumps({"action": "subscribe", "symbol": "NIFTY", "exchange": "NSE_INDEX", "mode": 1}))
        b.send(
            json.dumps({"action": "subscribe", "symbol": "NIFTY", "exchange": "NSE_INDEX", "mode": "Quote"})
        )
        assert recv_json(a)["type"] == "subscribe" and recv_json(b)["type"] == "subscribe"
        recv_json(a), recv_json(b)  # snapshots
        s.control.advance(1)
        ta, tb = recv_json(a), recv_json(b)
        assert (ta["mode"], tb["mode"]) == (1, 2)
        assert ta["data"]["ltp"] == tb["data"]["ltp"]
        assert "open" not in ta["data"] and "open" in tb["data"] and "change_percent" in tb["data"]


def test_raw_unsubscribe_when_mode_not_given_defaults_to_quote(simulator_session: SimHandle) -> None:
    s = simulator_session
    with raw(s.ws_url) as ws:
        auth(ws, s.api_keys[0])
        ws.send(
            json.dumps(
                {"action": "subscribe", "symbols": [{"symbol": "NIFTY", "exchange": "NSE_INDEX"}], "mode": 1}
            )
        )
        recv_json(ws), recv_json(ws)
        ws.send(
            json.dumps({"action": "unsubscribe", "symbols": [{"symbol": "NIFTY", "exchange": "NSE_INDEX"}]})
        )
        ack = recv_json(ws)
        assert ack["type"] == "unsubscribe" and ack["status"] == "success"
        s.control.advance(1)
        assert (
            recv_json(ws)["mode"] == 1
        )  # still subscribed at mode 1: the default-mode unsubscribe did nothing
        ws.send(
            json.dumps(
                {
                    "action": "unsubscribe",
                    "symbols": [{"symbol": "NIFTY", "exchange": "NSE_INDEX", "mode": 1}],
                }
            )
        )
        assert recv_json(ws)["type"] == "unsubscribe"
        ws.send(json.dumps({"action": "ping", "timestamp": 123, "_pingId": 7}))
        s.control.advance(2)
        pong = recv_json(ws)
        assert pong["type"] == "pong" and pong["client_timestamp"] == 123 and pong["_pingId"] == 7


def test_raw_errors_when_unauthenticated_or_bad_input_have_no_type(simulator_session: SimHandle) -> None:
    with raw(simulator_session.ws_url) as ws:
        ws.send(json.dumps({"action": "subscribe", "symbol": "NIFTY", "exchange": "NSE_INDEX"}))
        assert recv_json(ws) == {
            "status": "error",
            "code": "NOT_AUTHENTICATED",
            "message": "You must authenticate first",
        }
        ws.send("not json")
        assert recv_json(ws)["code"] == "INVALID_JSON"
        bad = auth(ws, "0" * 64)
        assert bad == {"status": "error", "code": "AUTHENTICATION_ERROR", "message": "Invalid API key"}
        ok = auth(ws, simulator_session.api_keys[0])
        assert ok["type"] == "auth" and ok["status"] == "success" and ok["broker"] == "sandbox"
        ws.send(json.dumps({"action": "subscribe", "symbol": "NIFTY", "exchange": "NSE_INDEX", "mode": 9}))
        assert recv_json(ws)["code"] == "INVALID_MODE"
        ws.send(json.dumps({"action": "dance"}))
        assert recv_json(ws)["code"] == "INVALID_ACTION"


def test_raw_auth_when_client_never_authenticates_closes_4401(make_simulator: Any) -> None:
    s = make_simulator(ws_auth_timeout=0.3)
    with raw(s.ws_url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "auth timeout")


def test_order_updates_when_subscribed_stream_own_account_only(simulator_session: SimHandle) -> None:
    from openalgo import api as sdk

    s = simulator_session
    with raw(s.ws_url) as mine, raw(s.ws_url) as other:
        auth(mine, s.api_keys[0])
        auth(other, s.api_keys[1])
        mine.send(json.dumps({"action": "subscribe_orders"}))
        other.send(json.dumps({"action": "subscribe_orders"}))
        assert recv_json(mine)["status"] == "success" and recv_json(other)["status"] == "success"
        r = sdk(api_key=s.api_keys[0], host=s.rest_url).placeorder(
            strategy="ou", symbol=CE, action="BUY", exchange="NFO", product="NRML", quantity=65
        )
        first, second = recv_json(mine), recv_json(mine)
        assert (first["type"], first["orderid"], first["order_status"]) == (
            "order_update",
            r["orderid"],
            "open",
        )
        assert (second["order_status"], second["filled_quantity"]) == ("complete", 65)
        with pytest.raises(TimeoutError):
            other.recv(timeout=0.3)
