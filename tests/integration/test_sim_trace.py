"""The paper exchange's timing trace (``/sim/trace``, used by bench/risk_latency.py): off by default, then
ticks as they leave the WebSocket and order placements as they arrive, in order, drained on read."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.sim_fixtures import SimHandle

CE = "NIFTY01DEC2626200CE"


def trace(sim: SimHandle, method: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(
        method, f"{sim.rest_url}/sim/trace", json=body, headers=sim.control_headers, timeout=10
    )


def test_trace_is_off_by_default_and_needs_the_token(simulator: SimHandle) -> None:
    off = trace(simulator, "GET")
    assert off.status_code == 400 and "trace is off" in off.json()["message"]
    assert httpx.get(f"{simulator.rest_url}/sim/trace", timeout=10).status_code == 401
    bad = trace(simulator, "POST", {"enabled": "yes"})
    assert bad.status_code == 400


def test_trace_records_ticks_sent_and_orders_arrived_in_order(simulator: SimHandle) -> None:
    assert trace(simulator, "POST", {"enabled": True}).json()["enabled"] is True
    with connect(simulator.ws_url, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "authenticate", "api_key": simulator.api_keys[0]}))
        json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"action": "subscribe", "symbol": CE, "exchange": "NFO", "mode": 1}))
        json.loads(ws.recv(timeout=5))  # ack
        json.loads(ws.recv(timeout=5))  # snapshot
        trace(simulator, "GET")  # forget the snapshot
        before = time.monotonic_ns()
        simulator.control.set_price(CE, "NFO", 150)
        frame = json.loads(ws.recv(timeout=5))
        assert frame["type"] == "market_data" and frame["data"]["ltp"] == 150.0
    order = httpx.post(
        f"{simulator.api_url}/placeorder",
        json={
            "apikey": simulator.api_keys[1],
            "strategy": "t",
            "symbol": CE,
            "action": "BUY",
            "exchange": "NFO",
            "pricetype": "MARKET",
            "product": "NRML",
            "quantity": "65",
        },
        timeout=10,
    )
    assert order.json()["status"] == "success"
    httpx.post(f"{simulator.api_url}/funds", json={"apikey": simulator.api_keys[1]}, timeout=10)

    read = trace(simulator, "GET").json()
    events = read["events"]
    assert read["dropped"] == 0
    assert [(e["kind"], e["symbol"]) for e in events] == [("tick", CE), ("order", CE)]
    tick, placed = events
    assert tick["ltp"] == 150.0 and tick["exchange"] == "NFO"
    assert placed["action"] == "BUY" and placed["quantity"] == "65" and placed["strategy"] == "t"
    assert placed["key"] == simulator.api_keys[1][-6:] and placed["endpoint"] == "placeorder"
    assert before <= tick["ns"] < placed["ns"] <= time.monotonic_ns()
    assert trace(simulator, "GET").json()["events"] == []  # drained

    assert trace(simulator, "POST", {"enabled": False}).json()["enabled"] is False
    assert trace(simulator, "GET").status_code == 400
