"""Raw-protocol details of the paper exchange's WebSocket that the SDK hides (OPENALGO-PROTOCOL.md §5.3)."""

from __future__ import annotations

import json
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.sim_fixtures import SimHandle


def _recv(ws: ClientConnection) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ws.recv(timeout=5.0))
    return data


def _authenticate(ws: ClientConnection, sim: SimHandle) -> None:
    ws.send(json.dumps({"action": "authenticate", "api_key": sim.api_keys[0]}))
    assert _recv(ws)["type"] == "auth"


def test_subscribe_when_every_symbol_fails_acks_partial_not_error(simulator_session: SimHandle) -> None:
    # OpenAlgo's ack is "success" only when every item succeeded, else "partial" (even when none did).
    with connect(simulator_session.ws_url, open_timeout=5, close_timeout=2) as ws:
        _authenticate(ws, simulator_session)
        ws.send(
            json.dumps(
                {
                    "action": "subscribe",
                    "mode": 1,
                    "request_id": "r9",
                    "symbols": [{"symbol": "BAD", "exchange": "NFO"}],
                }
            )
        )
        ack = _recv(ws)
        assert ack["type"] == "subscribe" and ack["status"] == "partial" and ack["request_id"] == "r9"
        assert ack["subscriptions"] == [
            {
                "symbol": "BAD",
                "exchange": "NFO",
                "status": "error",
                "message": "Token not found for BAD on NFO",
            }
        ]
