"""Paper-exchange fixtures (a pytest plugin loaded from tests/conftest.py). Stable API for every helper.

Fixtures
--------
``simulator`` (function scope)
    A fresh paper exchange in a background thread on ephemeral loopback ports: manual clock at
    Wed 25 Nov 2026 10:30 IST (a normal trading day), seed 42, 3 accounts of ₹1,00,00,000, control API on,
    OpenAlgo's default rate limits (10/s order routes, 50/s others, per API key and route).
``simulator_session`` (function scope over one session-wide server)
    The same configuration, started once per test session and reset (books, funds, faults, rate-limit
    counters, market back to seed/start) through ``POST /sim/reset`` before each test that uses it.
    Cheaper; use it when a test does not need its own server.
``make_simulator`` (function scope)
    A factory: ``make_simulator(clock="accelerated", speed=60, rate_limits=RateLimitConfig(enabled=False))``
    starts a simulator with :class:`SimulatorConfig` overrides (defaults as above, including the
    ``sim_profile``) and stops it afterwards.
``sim_profile`` (function scope)
    The exchange profile the three fixtures above start with: ``"live-like"`` unless a test overrides it,
    e.g. ``@pytest.mark.parametrize("sim_profile", SIM_PROFILES)`` (or ``@on_both_profiles``) runs the
    test once against each profile (``simulator_session`` keeps one shared server per profile).

Each yields a :class:`SimHandle`::

    def test_x(simulator):
        client = openalgo.api(api_key=simulator.api_keys[0], host=simulator.rest_url, ws_url=simulator.ws_url)
        simulator.control.set_price("NIFTY", "NSE_INDEX", 26100)
        simulator.control.advance(5)          # manual clock: 5 simulated seconds, ticks flow
        simulator.control.reject_next(1, "RMS: margin exceeds")

``rest_url`` is the SDK ``host`` (``http://127.0.0.1:<port>``, REST under ``/api/v1/``); ``ws_url`` is
``ws://127.0.0.1:<port>``; ``control`` is a :class:`SimControl` for ``/sim/...`` (see docs/simulator.md),
which sends the exchange's control token; raw calls pass ``headers=simulator.control_headers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from algomirror.simulator.profiles import DEFAULT_PROFILE, PROFILES, Profile
from algomirror.simulator.server import RunningSimulator, SimulatorConfig, start_in_thread

SIM_START = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)  # Wed 25 Nov 2026 10:30 IST
SIM_PROFILES: tuple[Profile, ...] = PROFILES
on_both_profiles = pytest.mark.parametrize("sim_profile", SIM_PROFILES)


def default_test_config(**overrides: Any) -> SimulatorConfig:
    base = SimulatorConfig(seed=42, accounts=3, clock="manual", start=SIM_START, control=True)
    return replace(base, **overrides)


class SimControl:
    """A thin client for the control API, sending the exchange's control token on every call. Every method
    raises ``httpx.HTTPStatusError`` on a refusal (401 for a missing or wrong token)."""

    def __init__(self, rest_url: str, token: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=rest_url + "/sim", timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, **body: Any) -> dict[str, Any]:
        payload = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in body.items() if v is not None}
        response = self._http.post(path, json=payload)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    # state, clock, prices ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        response = self._http.get("/state")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def reset(self, *, market: bool = True) -> dict[str, Any]:
        return self._post("/reset", market=market)

    def advance(self, seconds: float) -> datetime:
        """Move the manual clock forward ``seconds`` simulated seconds; returns the new instant."""
        return datetime.fromisoformat(self._post("/clock/advance", seconds=seconds)["now"])

    def advance_to(self, instant: datetime) -> datetime:
        return datetime.fromisoformat(self._post("/clock/advance", to=instant.isoformat())["now"])

    def now(self) -> datetime:
        return datetime.fromisoformat(self.state()["now"])

    def set_price(self, symbol: str, exchange: str, price: Decimal | float | int) -> dict[str, Any]:
        return self._post("/price", symbol=symbol, exchange=exchange, price=str(price))

    def ramp(
        self, symbol: str, exchange: str, target: Decimal | float | int, seconds: float
    ) -> dict[str, Any]:
        return self._post("/ramp", symbol=symbol, exchange=exchange, target=str(target), seconds=seconds)

    def add_account(self, capital: Decimal | int | None = None) -> str:
        return str(self._post("/accounts", capital=None if capital is None else str(capital))["apikey"])

    # faults ------------------------------------------------------------------------------------------
    def reject_next(
        self, count: int = 1, message: str | None = None, *, mode: str = "sync", apikey: str | None = None
    ) -> None:
        """The next ``count`` orders are rejected with ``message`` (sync: 400 + rejected row; async: 200 then
        rejected)."""
        self._post("/faults/reject", count=count, message=message, mode=mode, apikey=apikey)

    def partial_fill(self, count: int = 1, fraction: float = 0.5, *, apikey: str | None = None) -> None:
        self._post("/faults/partial", count=count, fraction=fraction, apikey=apikey)

    def cancel_fill(self, count: int = 1, *, apikey: str | None = None) -> None:
        """The next ``count`` cancels of a live order are acknowledged while the order fills instead."""
        self._post("/faults/cancel_fill", count=count, apikey=apikey)

    def latency(self, ms: float, *, endpoint: str | None = None, apikey: str | None = None) -> None:
        """Delay every matching call by ``ms`` (0 removes the delay)."""
        self._post("/faults/latency", ms=ms, endpoint=endpoint, apikey=apikey)

    def rate_limit_next(
        self, count: int = 1, *, endpoint: str | None = None, apikey: str | None = None
    ) -> None:
        self._post("/faults/ratelimit", count=count, endpoint=endpoint, apikey=apikey)

    def status_next(
        self,
        status: int,
        count: int = 1,
        *,
        endpoint: str | None = None,
        message: str | None = None,
        apikey: str | None = None,
    ) -> None:
        self._post(
            "/faults/status", status=status, count=count, endpoint=endpoint, message=message, apikey=apikey
        )

    def hang_next(
        self,
        count: int = 1,
        *,
        seconds: float = 60.0,
        execute: bool = True,
        endpoint: str | None = None,
        apikey: str | None = None,
    ) -> None:
        """The next ``count`` calls answer only after ``seconds``; ``execute`` says whether they still act."""
        self._post(
            "/faults/hang", count=count, seconds=seconds, execute=execute, endpoint=endpoint, apikey=apikey
        )

    def clear_faults(self) -> None:
        self._post("/faults/clear")

    def ws_drop(self) -> int:
        return int(self._post("/ws/drop")["dropped"])

    def ws_silent(self, enabled: bool = True) -> None:
        self._post("/ws/silent", enabled=enabled)

    def ws_zero_ticks(self, count: int = 1) -> None:
        self._post("/ws/zero", count=count)

    def ws_stale_ticks(self, count: int = 1, age_seconds: float = 120.0) -> None:
        self._post("/ws/stale", count=count, age_seconds=age_seconds)

    def ws_no_auth_reply(self, count: int = 1) -> None:
        self._post("/ws/no_auth_reply", count=count)


@dataclass
class SimHandle:
    running: RunningSimulator
    control: SimControl

    @property
    def rest_url(self) -> str:
        return self.running.rest_url

    @property
    def ws_url(self) -> str:
        return self.running.ws_url

    @property
    def api_keys(self) -> list[str]:
        return self.running.api_keys

    @property
    def profile(self) -> Profile:
        return self.running.core.config.profile

    @property
    def control_token(self) -> str:
        """The control API's token, for raw calls: ``headers={"Authorization": f"Bearer {token}"}``."""
        token = self.running.control_token
        assert token is not None
        return token

    @property
    def control_headers(self) -> dict[str, str]:
        """Headers that authenticate a raw control API call."""
        return {"Authorization": f"Bearer {self.control_token}"}

    @property
    def api_url(self) -> str:
        """``<rest_url>/api/v1`` for raw HTTP calls."""
        return self.running.rest_url + "/api/v1"


def _start(config: SimulatorConfig) -> SimHandle:
    running = start_in_thread(config)
    token = running.control_token
    assert token is not None, "the test exchanges serve the control API"
    return SimHandle(running, SimControl(running.rest_url, token))


def _stop(handle: SimHandle) -> None:
    handle.control.close()
    handle.running.stop()


@pytest.fixture
def sim_profile() -> Profile:
    return DEFAULT_PROFILE


@pytest.fixture
def simulator(sim_profile: Profile) -> Iterator[SimHandle]:
    handle = _start(default_test_config(profile=sim_profile))
    try:
        yield handle
    finally:
        _stop(handle)


@pytest.fixture(scope="session")
def _simulators_shared() -> Iterator[dict[Profile, SimHandle]]:
    """One session-wide server per profile, started on first use."""
    handles: dict[Profile, SimHandle] = {}
    try:
        yield handles
    finally:
        for handle in handles.values():
            _stop(handle)


@pytest.fixture
def simulator_session(_simulators_shared: dict[Profile, SimHandle], sim_profile: Profile) -> SimHandle:
    handle = _simulators_shared.get(sim_profile)
    if handle is None:
        handle = _simulators_shared[sim_profile] = _start(default_test_config(profile=sim_profile))
    else:
        handle.control.reset()
    return handle


@pytest.fixture
def make_simulator(sim_profile: Profile) -> Iterator[Callable[..., SimHandle]]:
    started: list[SimHandle] = []

    def make(**overrides: Any) -> SimHandle:
        handle = _start(default_test_config(**{"profile": sim_profile, **overrides}))
        started.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in started:
            _stop(handle)
