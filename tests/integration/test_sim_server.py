"""The paper exchange as a process and its clock modes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from algomirror.simulator.core import api_key_for
from tests.helpers import eventually


def test_cli_when_started_prints_keys_serves_and_stops_on_sigterm() -> None:
    exe = Path(sys.executable).with_name("algomirror")
    proc = subprocess.Popen(
        [
            str(exe),
            "simulator",
            "--port",
            "0",
            "--ws-port",
            "0",
            "--clock",
            "manual",
            "--control",
            "--seed",
            "7",
            "--accounts",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(7)]
        rest = lines[0].split()[-1].removesuffix("/api/v1/")
        keys = [line.split()[-1] for line in lines if line.startswith("account")]
        assert keys == [api_key_for(7, 0), api_key_for(7, 1)]
        (token,) = [line.split()[-1] for line in lines if line.startswith("control token")]
        r = httpx.post(rest + "/api/v1/ping", json={"apikey": keys[1]}, timeout=5)
        assert r.json()["data"]["message"] == "pong"
        assert httpx.get(rest + "/sim/state", timeout=5).status_code == 401
        state = httpx.get(rest + "/sim/state", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert state.json()["clock"] == "manual"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "paper exchange stopped" in out


def test_accelerated_clock_when_running_moves_time_and_streams_ticks(make_simulator: Any) -> None:
    sim = make_simulator(clock="accelerated", speed=120, tick_seconds=0.05)
    start = sim.control.now()
    with connect(sim.ws_url, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "authenticate", "api_key": sim.api_keys[0]}))
        json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"action": "subscribe", "symbol": "NIFTY", "exchange": "NSE_INDEX", "mode": 1}))
        json.loads(ws.recv(timeout=5))
        stamps = [json.loads(ws.recv(timeout=5))["data"]["timestamp"] for _ in range(10)]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]
    eventually(lambda: (sim.control.now() - start).total_seconds() >= 60, what="a simulated minute passes")


def test_manual_clock_when_advanced_past_1515_squares_off_mis(make_simulator: Any) -> None:
    from openalgo import api

    simulator = make_simulator(start=datetime.fromisoformat("2026-11-25T15:10:00+05:30"))
    client = api(api_key=simulator.api_keys[0], host=simulator.rest_url)
    client.placeorder(
        strategy="m", symbol="NIFTY01DEC2626000CE", action="BUY", exchange="NFO", product="MIS", quantity=65
    )
    simulator.control.advance_to(datetime.fromisoformat("2026-11-25T15:16:00+05:30"))
    pos = client.positionbook()["data"]
    assert [p["quantity"] for p in pos] == [0]
    assert client.orderbook()["data"]["orders"][0]["strategy"] == "AUTO_SQUARE_OFF"
    r = client.placeorder(
        strategy="m", symbol="NIFTY01DEC2626000CE", action="BUY", exchange="NFO", product="MIS", quantity=65
    )
    assert (
        r["code"] == 400 and "MIS orders cannot be placed after square-off time (15:15 IST)" in r["message"]
    )


CONTROL_ROUTES = [
    ("GET", "/sim/state"),
    ("POST", "/sim/reset"),
    ("POST", "/sim/clock/advance"),
    ("POST", "/sim/price"),
    ("POST", "/sim/ramp"),
    ("POST", "/sim/accounts"),
    ("POST", "/sim/faults/reject"),
    ("POST", "/sim/faults/partial"),
    ("POST", "/sim/faults/cancel_fill"),
    ("POST", "/sim/faults/latency"),
    ("POST", "/sim/faults/ratelimit"),
    ("POST", "/sim/faults/status"),
    ("POST", "/sim/faults/hang"),
    ("POST", "/sim/faults/clear"),
    ("POST", "/sim/ws/drop"),
    ("POST", "/sim/ws/silent"),
    ("POST", "/sim/ws/zero"),
    ("POST", "/sim/ws/stale"),
    ("POST", "/sim/ws/no_auth_reply"),
]


def test_control_routes_when_token_missing_or_wrong_are_401_and_change_nothing(simulator: Any) -> None:
    before = simulator.control.state()
    wrong = simulator.control_token[:-1] + ("A" if simulator.control_token[-1] != "A" else "B")
    refusals = [
        {},
        {"Authorization": f"Bearer {wrong}"},
        {"X-Sim-Token": wrong},
        {"Authorization": f"Basic {simulator.control_token}"},
        {"Authorization": "Bearer"},
    ]
    for method, path in CONTROL_ROUTES:
        for headers in refusals:
            body = {"seconds": 60, "count": 1, "capital": "5000"} if method == "POST" else None
            r = httpx.request(method, simulator.rest_url + path, json=body, headers=headers, timeout=5)
            assert r.status_code == 401, (path, headers, r.text)
            assert "apikey" not in r.text.lower() and simulator.api_keys[0] not in r.text
    after = simulator.control.state()
    assert after["now"] == before["now"] and after["api_keys"] == before["api_keys"]
    assert after["faults"] == before["faults"]


def test_control_routes_when_token_given_in_either_header_answer(simulator: Any) -> None:
    url = simulator.rest_url + "/sim/state"
    bearer = httpx.get(url, headers={"Authorization": f"Bearer {simulator.control_token}"}, timeout=5)
    header = httpx.get(url, headers={"X-Sim-Token": simulator.control_token}, timeout=5)
    assert bearer.status_code == header.status_code == 200
    assert bearer.json()["api_keys"] == simulator.api_keys


def test_control_token_when_two_exchanges_start_differs_and_is_not_in_the_public_api(
    make_simulator: Any,
) -> None:
    first, second = make_simulator(), make_simulator()
    assert len(first.control_token) >= 32 and first.control_token != second.control_token
    r = httpx.get(second.rest_url + "/sim/state", headers=first.control_headers, timeout=5)
    assert r.status_code == 401
    ping = httpx.post(first.api_url + "/ping", json={"apikey": first.api_keys[0]}, timeout=5)
    assert first.control_token not in ping.text
