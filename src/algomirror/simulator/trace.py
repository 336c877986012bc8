"""An off-by-default timing trace of the paper exchange (benchmarks: ``bench/risk_latency.py``).

While enabled (``POST /sim/trace {"enabled": true}``) the exchange records, with ``time.monotonic_ns()``
of its own process:

* ``tick``: each market-data frame right after the WebSocket handed it to the socket (``symbol``,
  ``exchange``, ``ltp``), i.e. as the tick leaves the exchange;
* ``order``: each ``placeorder`` / ``placesmartorder`` call as it arrives, once its body is read and before
  rate limits, faults or validation (``symbol``, ``action``, ``quantity``, ``strategy`` and the last six
  characters of the API key, enough to tell accounts apart).

``GET /sim/trace`` returns the events in order and forgets them. The trace costs nothing while disabled
(one ``is None`` test per frame and per call). Frames are kept as sent and parsed only when read, so the
exchange's tick path stays cheap while tracing; at most ``limit`` events are kept (the oldest are dropped
and counted).
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

TRACED_ENDPOINTS = frozenset({"placeorder", "placesmartorder"})


class Trace:
    """The recorder; ``limit`` bounds the events kept between two reads."""

    def __init__(self, limit: int = 200_000) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self._events: deque[tuple[int, str, Any]] = deque(maxlen=limit)
        self._limit = limit
        self.dropped = 0

    def _add(self, kind: str, payload: Any) -> None:
        if len(self._events) == self._limit:
            self.dropped += 1
        self._events.append((time.monotonic_ns(), kind, payload))

    def frame_sent(self, frame: str) -> None:
        """A WebSocket text frame was just written to a client's socket (only market data is kept)."""
        if '"market_data"' in frame:
            self._add("tick", frame)

    def request(self, endpoint: str, body: Any) -> None:
        """A REST call arrived with its parsed JSON ``body`` (only order placements are kept)."""
        if endpoint not in TRACED_ENDPOINTS or not isinstance(body, dict):
            return
        key = body.get("apikey")
        self._add(
            "order",
            {
                "endpoint": endpoint,
                "symbol": body.get("symbol"),
                "exchange": body.get("exchange"),
                "action": body.get("action"),
                "quantity": body.get("quantity"),
                "strategy": body.get("strategy"),
                "key": key[-6:] if isinstance(key, str) else None,
            },
        )

    def drain(self) -> dict[str, Any]:
        """Every event since the last read (``{"ns", "kind", ...}``, oldest first) and the drop count."""
        events: list[dict[str, Any]] = []
        while self._events:
            ns, kind, payload = self._events.popleft()
            if kind == "tick":
                frame = json.loads(payload)
                data = frame.get("data") or {}
                events.append(
                    {
                        "ns": ns,
                        "kind": kind,
                        "symbol": frame.get("symbol"),
                        "exchange": frame.get("exchange"),
                        "ltp": data.get("ltp"),
                    }
                )
            else:
                events.append({"ns": ns, "kind": kind, **payload})
        dropped, self.dropped = self.dropped, 0
        return {"events": events, "dropped": dropped}


__all__ = ["TRACED_ENDPOINTS", "Trace"]
