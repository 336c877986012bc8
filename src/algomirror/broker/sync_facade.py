"""Run broker coroutines from synchronous code (Flask views) on one background event-loop thread.

Flask request threads must not each start an event loop and a connection pool; they hand the
coroutine to :func:`background`, whose daemon thread owns one loop and one (aiohttp)
:class:`HostPool`, and wait for the result with a timeout. Thread-safe; the thread starts on first use
and the pool is closed at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.errors import BrokerTimeoutError, UnknownOutcomeError

T = TypeVar("T")


class BackgroundLoop:
    """A daemon thread running an asyncio loop, with a :class:`HostPool` that lives on it."""

    def __init__(self, name: str = "algomirror-broker-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: HostPool | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread, self._pool = loop, thread, HostPool()
            return self._loop

    def run(self, make: Callable[[], Awaitable[T]], *, timeout: float, order: bool = False) -> T:
        """Run ``make()`` on the loop and wait at most ``timeout`` seconds.

        On timeout the coroutine is cancelled and :class:`BrokerTimeoutError` is raised (for an order
        call, ``order=True``: :class:`UnknownOutcomeError`, since it may have reached the server).
        Exceptions raised by the coroutine propagate unchanged.
        """
        loop = self._ensure()

        async def runner() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(runner(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            if order:
                raise UnknownOutcomeError(
                    f"no reply within {timeout:g} s; the order may or may not exist"
                ) from None
            raise BrokerTimeoutError(f"no reply within {timeout:g} s") from None

    def run_with_pool(
        self, make: Callable[[HostPool], Awaitable[T]], *, timeout: float, order: bool = False
    ) -> T:
        """Like :meth:`run`, handing the coroutine factory this loop's shared :class:`HostPool`."""
        self._ensure()
        pool = self._pool
        assert pool is not None
        return self.run(lambda: make(pool), timeout=timeout, order=order)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool and stop the thread (tests, shutdown)."""
        with self._lock:
            loop, thread, pool = self._loop, self._thread, self._pool
            self._loop = self._thread = self._pool = None
        if loop is None or thread is None:
            return
        if pool is not None:
            asyncio.run_coroutine_threadsafe(pool.aclose(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()


_background: BackgroundLoop | None = None
_background_lock = threading.Lock()


def background() -> BackgroundLoop:
    """The process-wide background loop (created on first use)."""
    global _background
    with _background_lock:
        if _background is None:
            _background = BackgroundLoop()
            # Close its sessions while the interpreter still runs: aiohttp warns about any left open.
            atexit.register(_background.close)
        return _background


def call_broker(
    host_url: str,
    api_key: str,
    call: Callable[[OpenAlgoClient], Awaitable[T]],
    *,
    timeouts: Timeouts | None = None,
    order: bool = False,
) -> T:
    """Run ``call(client)`` for one account from synchronous code; reads retry once at most.

    Raises the client's :class:`~algomirror.broker.errors.BrokerError` subclasses.
    """
    times = timeouts or Timeouts(connect=4.0, read=8.0, order=10.0)
    budget = (times.order if order else times.read * 2) + times.connect + 2.0

    async def go(pool: HostPool) -> T:
        client = OpenAlgoClient(host_url, api_key, pool=pool, timeouts=times, retry=RetryPolicy(attempts=2))
        return await call(client)

    return background().run_with_pool(go, timeout=budget, order=order)
