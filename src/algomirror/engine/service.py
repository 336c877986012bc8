"""The engine service: one asyncio loop running components (account sync now; execution, risk, feeds
and scheduling later), guarded by the single-instance lock.

Production runs it as its own process (``algomirror engine``); the embedded demo runs it on a
background thread of the web process (:class:`EngineThread`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from algomirror.engine.lock import EngineLock

log = logging.getLogger(__name__)


class Component(Protocol):
    """A long-running part of the engine. ``run`` returns when ``stop`` is set."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


class EngineService:
    """Runs components concurrently until stopped. A component that crashes is logged and restarted
    after a short pause: one faulty part must not take the whole engine (and its risk checks) down."""

    def __init__(self, components: Sequence[Component], lock: EngineLock | None = None) -> None:
        self.components = list(components)
        self.lock = lock
        self._stop: asyncio.Event | None = None
        self._locked = False
        self.restart_delay = 2.0

    def acquire_lock(self) -> None:
        """Take the single-instance lock now. Raises EngineAlreadyRunning."""
        if self.lock is not None and not self._locked:
            self.lock.acquire()
            self._locked = True

    async def run(self) -> None:
        """Acquire the lock if not yet held (raises EngineAlreadyRunning), then run every component
        until stopped."""
        self.acquire_lock()
        self._stop = asyncio.Event()
        try:
            await asyncio.gather(*(self._supervise(c, self._stop) for c in self.components))
        finally:
            if self.lock is not None and self._locked:
                self.lock.release()
                self._locked = False

    async def _supervise(self, component: Component, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await component.run(stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("engine component %s crashed; restarting", component.name)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.restart_delay)
                except TimeoutError:
                    continue
            else:
                return

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


class EngineThread:
    """Runs an :class:`EngineService` on its own event loop in a daemon thread (embedded mode)."""

    def __init__(self, service: EngineService) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="algomirror-engine", daemon=True)
        self._started = threading.Event()
        self.error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._run())
        except BaseException as exc:  # recorded for the owner thread to report
            self.error = exc
            self._started.set()
            log.exception("engine thread stopped with an error")
        finally:
            self.loop.close()

    async def _run(self) -> None:
        self._started.set()
        await self.service.run()

    def start(self) -> None:
        """Take the lock in the caller's thread (so EngineAlreadyRunning surfaces here), then start."""
        self.service.acquire_lock()
        self._thread.start()
        self._started.wait(timeout=10)
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.service.request_stop)
            self._thread.join(timeout)
