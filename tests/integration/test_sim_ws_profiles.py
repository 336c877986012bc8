"""The paper exchange's market-data WebSocket per profile: ``openalgo-paper`` frames as a real OpenAlgo
server sends them (no snapshot, upstream-mode fan-out, ``data`` naming the symbol, "Subscription processing
complete" acks with ``broker``, ``unsubscribe_all`` listing symbols, ``pending_quantity`` 0 on open
orders); ``live-like`` keeps the snapshot and relabelled copies."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.sim_fixtures import SimHandle, on_both_profiles

CE = "NIFTY01DEC2626000CE"


@contextmanager
def feed(sim: SimHandle) -> Iterator[ClientConnection]:
    with connect(sim.ws_url, open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"action": "authenticate", "api_key": sim.api_keys[0]}))
        assert next_of(ws, "auth")["status"] == "success"
        yield ws


def next_of(ws: ClientConnection, kind: str, deadline: float = 5.0) -> dict[str, Any]:
    """The next frame of ``type`` ``kind`` within ``deadline`` seconds (others are skipped)."""
    end = time.monotonic() + deadline
    while (left := end - time.monotonic()) > 0:
        frame = json.loads(ws.recv(timeout=left))
        if frame.get("type") == kind:
            return frame  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} frame within {deadline} s")


def subscribe(ws: ClientConnection, mode: int) -> dict[str, Any]:
    ws.send(json.dumps({"action": "subscribe", "symbols": [{"symbol": CE, "exchange": "NFO"}], "mode": mode}))
    return next_of(ws, "subscribe")


@on_both_profiles
def test_subscribe_when_price_moves_first_tick_is_snapshot_only_on_live_like(simulator: SimHandle) -> None:
    with feed(simulator) as ws:
        ack = subscribe(ws, 1)
        simulator.control.set_price(CE, "NFO", "123.45")
        first = next_of(ws, "market_data")
    if simulator.profile == "openalgo-paper":
        assert ack["message"] == "Subscription processing complete"
        assert ack["broker"]
        # Nothing was sent before the first real tick.
        assert first["data"]["ltp"] == 123.45
        assert (first["data"]["symbol"], first["data"]["exchange"], first["data"]["mode"]) == (CE, "NFO", 1)
    else:
        assert "broker" not in ack
        assert first["data"]["ltp"] != 123.45, "live-like sends the current quote as a snapshot"
        assert "symbol" not in first["data"]


@on_both_profiles
def test_ltp_subscriber_when_another_wants_quote_gets_quote_frames_only_on_openalgo_paper(
    simulator: SimHandle,
) -> None:
    with feed(simulator) as ltp_ws, feed(simulator) as quote_ws:
        subscribe(ltp_ws, 1)
        subscribe(quote_ws, 2)
        simulator.control.set_price(CE, "NFO", "150.10")
        while (frame := next_of(ltp_ws, "market_data"))["data"]["ltp"] != 150.10:
            pass
    if simulator.profile == "openalgo-paper":
        assert frame["mode"] == 2 and "open" in frame["data"]
    else:
        assert frame["mode"] == 1 and "open" not in frame["data"]


@on_both_profiles
def test_unsubscribe_all_when_subscribed_lists_symbols_only_on_openalgo_paper(simulator: SimHandle) -> None:
    with feed(simulator) as ws:
        subscribe(ws, 2)
        ws.send(json.dumps({"action": "unsubscribe_all"}))
        reply = next_of(ws, "unsubscribe")
    assert reply["status"] == "success"
    if simulator.profile == "openalgo-paper":
        assert reply["successful"] == [{"symbol": CE, "exchange": "NFO", "mode": "Quote"}]
        assert reply["broker"]
    else:
        assert reply["successful"] == []


@pytest.mark.parametrize("sim_profile", ["openalgo-paper", "live-like"])
def test_order_update_when_limit_order_rests_reports_pending_per_profile(simulator: SimHandle) -> None:
    with feed(simulator) as ws:
        ws.send(json.dumps({"action": "subscribe_orders"}))
        next_of(ws, "subscribe_orders")
        reply = httpx.post(
            simulator.api_url + "/placeorder",
            json={
                "apikey": simulator.api_keys[0],
                "strategy": "ws-profile",
                "symbol": CE,
                "exchange": "NFO",
                "action": "BUY",
                "quantity": "65",
                "pricetype": "LIMIT",
                "price": "0.05",
                "product": "NRML",
            },
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        update = next_of(ws, "order_update")
    assert update["order_status"] == "open"
    expected = 0 if simulator.profile == "openalgo-paper" else 65
    assert update["pending_quantity"] == expected
