"""Per-account request pacing, so a fan-out never earns a 429.

OpenAlgo limits each route with a *moving* one-second window counted when a request *arrives*
(protocol §1.5). We cannot see arrival times: a request may wait for a pooled connection or sit in a
socket buffer after we let it go. What we do know is that it arrives between the moment we let it go and
the moment its reply comes back. So a call holds its slot while in flight and for one window after its
reply: then no window at the server can ever hold more than ``rate`` arrivals, whatever the queuing
delays (a token bucket, or counting only start times, both fail that under load). Waiters are served
first come, first served. Each account has its own :class:`RateScheduler`, so one busy or slow account
never delays another; within an account a slow reply only delays calls of the same budget once the
budget is exhausted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum


class Budget(StrEnum):
    """Which allowance an endpoint draws on."""

    ORDER = "order"  # place, modify, cancel, optionsorder, optionsmultiorder
    SMART = "smart"  # placesmartorder
    OTHER = "other"  # every other route


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Calls per second per budget. Defaults are OpenAlgo's: 10 orders, 10 smart, 50 other.

    ``margin`` stretches the window (0.1 = 10 %) so requests that leave evenly spaced cannot arrive
    bunched up by jitter. ``None`` for a budget disables pacing for it.
    """

    order: int | None = 10
    smart: int | None = 10
    other: int | None = 50
    period: float = 1.0
    margin: float = 0.1

    def __post_init__(self) -> None:
        for name in ("order", "smart", "other"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"rate limit '{name}' must be ≥ 1 or None")
        if self.period <= 0 or self.margin < 0:
            raise ValueError("period must be > 0 and margin ≥ 0")

    @classmethod
    def unlimited(cls) -> RateLimits:
        return cls(order=None, smart=None, other=None)


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class SlidingWindow:
    """At most ``rate`` calls in flight or finished within the last ``window`` seconds; FIFO waiters.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable so tests run on a fake clock.
    """

    def __init__(
        self, rate: int, window: float, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ):
        if rate < 1 or window <= 0:
            raise ValueError("rate must be ≥ 1 and window > 0")
        self.rate = rate
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._in_flight = 0
        self._finished: deque[float] = deque()  # reply times, ascending
        self._released = asyncio.Event()
        # asyncio.Lock wakes waiters in arrival order: this is what makes the budget fair.
        self._lock = asyncio.Lock()

    def _used(self, now: float) -> int:
        while self._finished and now - self._finished[0] >= self.window:
            self._finished.popleft()
        return self._in_flight + len(self._finished)

    async def acquire(self) -> float:
        """Wait for a slot and take it; pair with :meth:`release`. Returns the seconds spent waiting."""
        began = self._clock()
        async with self._lock:
            while True:
                now = self._clock()
                if self._used(now) < self.rate:
                    self._in_flight += 1
                    return now - began
                self._released.clear()
                if self._finished:
                    await self._wait(self.window - (now - self._finished[0]))
                else:
                    await self._released.wait()  # every slot is in flight: wait for a reply

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` or until a slot is released, whichever comes first."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waiter = asyncio.ensure_future(self._released.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()

    def release(self) -> None:
        """The call's reply arrived (or it failed): its slot frees one window from now."""
        if self._in_flight <= 0:
            raise RuntimeError("release() without acquire()")
        self._in_flight -= 1
        self._finished.append(self._clock())
        self._released.set()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        waited = await self.acquire()
        try:
            yield waited
        finally:
            self.release()

    def in_window(self) -> int:
        """Slots in use now (in flight + finished within the window), for tests and metrics."""
        return self._used(self._clock())


class RateScheduler:
    """One account's budgets. Wrap every request in :meth:`slot`."""

    def __init__(
        self, limits: RateLimits | None = None, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ):
        self.limits = limits or RateLimits()
        window = self.limits.period * (1 + self.limits.margin)
        self._windows: dict[Budget, SlidingWindow] = {}
        for budget in Budget:
            rate = getattr(self.limits, budget.value)
            if rate is not None:
                self._windows[budget] = SlidingWindow(rate, window, clock=clock, sleep=sleep)
        self.waited = 0.0  # total seconds callers spent waiting (metrics)

    @asynccontextmanager
    async def slot(self, budget: Budget) -> AsyncIterator[None]:
        """Hold one slot of ``budget`` around a request: ``async with scheduler.slot(budget): ...``."""
        window = self._windows.get(budget)
        if window is None:
            yield
            return
        async with window.slot() as waited:
            self.waited += waited
            yield

    def window(self, budget: Budget) -> SlidingWindow | None:
        return self._windows.get(budget)


_ORDER_ENDPOINTS = frozenset(
    {"placeorder", "modifyorder", "cancelorder", "optionsorder", "optionsmultiorder"}
)


def budget_for(endpoint: str) -> Budget:
    """The budget an endpoint draws on (protocol §1.5: 10/s order routes and smart, 50/s the rest)."""
    if endpoint == "placesmartorder":
        return Budget.SMART
    if endpoint in _ORDER_ENDPOINTS:
        return Budget.ORDER
    return Budget.OTHER
