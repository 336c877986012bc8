"""Fault-injection state shared by the REST server, the exchange and the WebSocket server.

Every fault is armed through the control API (``/sim/faults/...``) and is consumed or cleared there.
A fault may be limited to one API key (``apikey``) and, for HTTP faults, to one endpoint (``endpoint``,
the name after ``/api/v1/``, e.g. ``placeorder``; ``*`` or absent = every endpoint). Counted faults
fire for the next ``count`` matching events and then disarm themselves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

# Endpoints that place orders (the "reject next N orders" and "partial fill" faults count these).
ORDER_ENDPOINTS = frozenset(
    {"placeorder", "placesmartorder", "optionsorder", "optionsmultiorder", "basketorder", "splitorder"}
)


@dataclass(slots=True)
class CountedFault:
    count: int
    apikey: str | None = None
    endpoint: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, apikey: str | None, endpoint: str | None = None) -> bool:
        if self.count <= 0:
            return False
        if self.apikey is not None and self.apikey != apikey:
            return False
        return not (self.endpoint not in (None, "*") and endpoint is not None and self.endpoint != endpoint)


@dataclass(slots=True)
class Latency:
    seconds: float
    apikey: str | None = None
    endpoint: str | None = None


class FaultState:
    """Thread-safe; the control API and tests may arm faults while the loop serves requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.rejects: list[CountedFault] = []
            self.partials: list[CountedFault] = []
            self.cancel_fills: list[CountedFault] = []
            self.http_status: list[CountedFault] = []
            self.hangs: list[CountedFault] = []
            self.latencies: list[Latency] = []
            # WebSocket faults
            self.ws_silent = False
            self.ws_zero_ticks = 0
            self.ws_stale_ticks = 0
            self.ws_stale_age_seconds = 120.0
            self.ws_skip_auth_reply = 0

    # -- arming ------------------------------------------------------------------------------------

    def add(self, kind: str, fault: CountedFault) -> None:
        with self._lock:
            getattr(self, kind).append(fault)

    def add_latency(self, latency: Latency) -> None:
        with self._lock:
            self.latencies = [
                x for x in self.latencies if (x.apikey, x.endpoint) != (latency.apikey, latency.endpoint)
            ]
            if latency.seconds > 0:
                self.latencies.append(latency)

    # -- consuming ---------------------------------------------------------------------------------

    def _take(
        self, faults: list[CountedFault], apikey: str | None, endpoint: str | None
    ) -> CountedFault | None:
        with self._lock:
            for fault in faults:
                if fault.matches(apikey, endpoint):
                    fault.count -= 1
                    if fault.count <= 0:
                        faults.remove(fault)
                    return fault
        return None

    def take_reject(self, apikey: str) -> CountedFault | None:
        """The reject fault for the next order of ``apikey`` (params: message, mode sync|async)."""
        return self._take(self.rejects, apikey, None)

    def take_partial(self, apikey: str) -> CountedFault | None:
        """The partial-fill fault for the next fill of ``apikey`` (params: fraction)."""
        return self._take(self.partials, apikey, None)

    def take_cancel_fill(self, apikey: str) -> CountedFault | None:
        """The cancel-fill fault for the next cancel of a live order of ``apikey``: the cancel is
        acknowledged but the order fills instead (the exchange matched it before the cancel arrived)."""
        return self._take(self.cancel_fills, apikey, None)

    def take_http_status(self, apikey: str | None, endpoint: str) -> CountedFault | None:
        """A forced HTTP answer (params: status, message) for this call."""
        return self._take(self.http_status, apikey, endpoint)

    def take_hang(self, apikey: str | None, endpoint: str) -> CountedFault | None:
        """A hang for this call (params: seconds, execute)."""
        return self._take(self.hangs, apikey, endpoint)

    def latency_for(self, apikey: str | None, endpoint: str) -> float:
        with self._lock:
            best = 0.0
            for lat in self.latencies:
                if lat.apikey is not None and lat.apikey != apikey:
                    continue
                if lat.endpoint not in (None, "*") and lat.endpoint != endpoint:
                    continue
                best = max(best, lat.seconds)
            return best

    def take_zero_tick(self) -> bool:
        with self._lock:
            if self.ws_zero_ticks > 0:
                self.ws_zero_ticks -= 1
                return True
            return False

    def take_stale_tick(self) -> bool:
        with self._lock:
            if self.ws_stale_ticks > 0:
                self.ws_stale_ticks -= 1
                return True
            return False

    def take_skip_auth_reply(self) -> bool:
        with self._lock:
            if self.ws_skip_auth_reply > 0:
                self.ws_skip_auth_reply -= 1
                return True
            return False

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rejects": [_fault_dict(f) for f in self.rejects],
                "partials": [_fault_dict(f) for f in self.partials],
                "cancel_fills": [_fault_dict(f) for f in self.cancel_fills],
                "http_status": [_fault_dict(f) for f in self.http_status],
                "hangs": [_fault_dict(f) for f in self.hangs],
                "latencies": [
                    {"seconds": x.seconds, "apikey": _mask(x.apikey), "endpoint": x.endpoint}
                    for x in self.latencies
                ],
                "ws": {
                    "silent": self.ws_silent,
                    "zero_ticks": self.ws_zero_ticks,
                    "stale_ticks": self.ws_stale_ticks,
                    "stale_age_seconds": self.ws_stale_age_seconds,
                    "skip_auth_reply": self.ws_skip_auth_reply,
                },
            }


def _mask(key: str | None) -> str | None:
    return None if key is None else key[:6] + "…"


def _fault_dict(f: CountedFault) -> dict[str, Any]:
    return {"count": f.count, "apikey": _mask(f.apikey), "endpoint": f.endpoint, **f.params}
