"""Assemble the paper exchange: REST (+ control) and WebSocket servers on one asyncio loop.

In-loop use::

    sim = Simulator(SimulatorConfig(clock="manual", control=True))
    await sim.start()
    ... sim.rest_url, sim.ws_url, sim.api_keys, sim.control_token ...
    await sim.stop()

From synchronous code (tests, the embedded demo), in a background thread::

    with start_in_thread(SimulatorConfig(control=True)) as running:
        api(api_key=running.api_keys[0], host=running.rest_url, ws_url=running.ws_url)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from aiohttp import web

from algomirror.simulator.core import SimulatorConfig, SimulatorCore
from algomirror.simulator.rest import build_rest_app
from algomirror.simulator.ws import WsHub, build_ws_app

T = TypeVar("T")


class Simulator:
    """The paper exchange, started and stopped on the running event loop."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.core = SimulatorCore(self.config)
        self.hub = WsHub(self.core)
        self._runners: list[web.AppRunner] = []
        self.rest_port = 0
        self.ws_port = 0

    @property
    def rest_url(self) -> str:
        """Base URL for the SDK's ``host`` (no ``/api/v1``), e.g. ``http://127.0.0.1:5000``."""
        return f"http://{self.config.host}:{self.rest_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.ws_port}"

    @property
    def control_url(self) -> str | None:
        return f"{self.rest_url}/sim" if self.config.control else None

    @property
    def api_keys(self) -> list[str]:
        return list(self.core.api_keys)

    @property
    def control_token(self) -> str | None:
        """The secret the control API requires (``Authorization: Bearer …``); None without control."""
        return self.core.control_token if self.config.control else None

    async def start(self) -> None:
        """Bind both ports and start the clock. Raises OSError if a port is taken."""
        rest = web.AppRunner(build_rest_app(self.core), access_log=None, shutdown_timeout=0.5)
        ws = web.AppRunner(build_ws_app(self.hub), access_log=None, shutdown_timeout=0.5)
        for runner, port in ((rest, self.config.port), (ws, self.config.ws_port)):
            await runner.setup()
            self._runners.append(runner)
            site = web.TCPSite(runner, self.config.host, port, reuse_address=True)
            await site.start()
        self.rest_port = _bound_port(rest)
        self.ws_port = _bound_port(ws)
        self.core.clock.rebase()
        self.core.clock.start()

    async def stop(self) -> None:
        await self.core.clock.stop()
        if self._runners:
            await self.hub.drop_all()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def listening_addresses(self) -> list[tuple[str, int]]:
        """Every (address, port) the REST and WebSocket servers listen on (empty before start)."""
        addresses: list[tuple[str, int]] = []
        for runner in self._runners:
            for site in runner.sites:
                server = getattr(site, "_server", None)
                for sock in server.sockets if server is not None else ():
                    name = sock.getsockname()
                    addresses.append((str(name[0]), int(name[1])))
        return addresses


def _bound_port(runner: web.AppRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("site not bound")


class RunningSimulator:
    """A :class:`Simulator` running on its own event loop in a daemon thread. Use as a context manager."""

    def __init__(self, sim: Simulator, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.sim = sim
        self.loop = loop
        self.thread = thread

    @property
    def rest_url(self) -> str:
        return self.sim.rest_url

    @property
    def ws_url(self) -> str:
        return self.sim.ws_url

    @property
    def control_url(self) -> str | None:
        return self.sim.control_url

    @property
    def api_keys(self) -> list[str]:
        return self.sim.api_keys

    @property
    def control_token(self) -> str | None:
        return self.sim.control_token

    @property
    def core(self) -> SimulatorCore:
        return self.sim.core

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the simulator's loop thread and return its result (thread-safe state access)."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.loop.is_closed() and self.thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop)
            try:
                future.result(timeout)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(timeout)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_in_thread(config: SimulatorConfig | None = None, *, timeout: float = 30.0) -> RunningSimulator:
    """Start the paper exchange in a daemon thread and return once both ports listen.

    Raises whatever start-up raised (OSError for a taken port, ImportError/ValueError for a bad market).
    """
    started: concurrent.futures.Future[Simulator] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            sim = Simulator(config)
            loop.run_until_complete(sim.start())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which re-raises it
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(sim)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=run, name="paper-exchange", daemon=True)
    thread.start()
    sim = started.result(timeout)
    return RunningSimulator(sim, loop, thread)


__all__ = ["RunningSimulator", "Simulator", "SimulatorConfig", "start_in_thread"]
