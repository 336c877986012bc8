"""Per-account request pacing, so a fan-out never earns a 429.

OpenAlgo limits each route with a *moving* one-second window counted when a request *arrives*
(protocol §1.5). We cannot see arrival times: a request may wait for a pooled connection or sit in a
socket buffer after we let it go. What we do know is that it arrives between the moment we let it go and
the moment its reply comes back. So a call holds its slot while in flight and for one window after its
reply: then no window at the server can ever hold more than ``rate`` arrivals, whatever the queuing
delays (a token bucket, or counting only start times, both fail that under load). Waiters are served by
:class:`Priority` (exits, then entries, then reads), first come first served within one. Each account
has its own :class:`RateScheduler`, so one busy or slow account never delays another; within an account
a slow reply only delays calls of the same budget once the budget is exhausted.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import IntEnum, StrEnum


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


class Priority(IntEnum):
    """Which waiting call gets the next free slot of a budget: lower is served first.

    Exits (closing risk) go before entries (opening it) before reads (sync, quotes); FIFO within one
    priority. A call already holding a slot is never pre-empted.
    """

    EXIT = 0
    ENTRY = 1
    READ = 2


class _Waiter:
    """One queued :meth:`SlidingWindow.acquire`; ordered by (priority, arrival)."""

    __slots__ = ("granted", "key", "wake")

    def __init__(self, priority: int, seq: int) -> None:
        self.key = (priority, seq)
        self.wake = asyncio.Event()
        self.granted = False

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class SlidingWindow:
    """At most ``rate`` calls in flight or finished within the last ``window`` seconds.

    Waiters are served by :class:`Priority`, then in arrival order. ``clock`` (monotonic seconds) and
    ``sleep`` are injectable so tests run on a fake clock.
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
        self._waiters: list[_Waiter] = []  # a heap
        self._seq = itertools.count()
        self._timer: asyncio.Task[None] | None = None

    def _used(self, now: float) -> int:
        while self._finished and now - self._finished[0] >= self.window:
            self._finished.popleft()
        return self._in_flight + len(self._finished)

    @property
    def waiting(self) -> int:
        """Callers queued for a slot now (for tests and metrics)."""
        return len(self._waiters)

    async def acquire(self, priority: int = Priority.READ) -> float:
        """Wait for a slot and take it; pair with :meth:`release`. Returns the seconds spent waiting.

        ``priority`` orders the waiters (:class:`Priority`; lower first). Cancelling a waiter gives
        up its place, or hands back a slot granted but not yet used.
        """
        began = self._clock()
        if not self._waiters and self._used(began) < self.rate:
            self._in_flight += 1
            return 0.0
        waiter = _Waiter(int(priority), next(self._seq))
        heapq.heappush(self._waiters, waiter)
        self._pump()
        try:
            if waiter.granted:
                # Granted by its own arrival: still let those granted before it run first.
                await asyncio.sleep(0)
            else:
                await waiter.wake.wait()
        except BaseException:
            if waiter.granted:
                # Granted but never used: nothing was sent, so the slot is free at once.
                self._in_flight -= 1
            else:
                self._waiters.remove(waiter)
                heapq.heapify(self._waiters)
            self._pump()
            raise
        return self._clock() - began

    def _pump(self) -> None:
        """Grant free slots to the best waiters; arm one timer for the next expiry if still blocked."""
        now = self._clock()
        while self._waiters and self._used(now) < self.rate:
            waiter = heapq.heappop(self._waiters)
            waiter.granted = True
            self._in_flight += 1
            waiter.wake.set()
        if not self._waiters:
            if self._timer is not None and not self._timer.done():
                self._timer.cancel()
            self._timer = None
            return
        if self._finished and (self._timer is None or self._timer.done()):
            # Blocked by finished calls: the oldest leaves the window at a known time. When every
            # slot is in flight instead, only a release can free one, and release() pumps.
            self._timer = asyncio.ensure_future(self._expire(self.window - (now - self._finished[0])))

    async def _expire(self, seconds: float) -> None:
        await self._sleep(max(seconds, 0.0))
        self._timer = None
        self._pump()

    def release(self) -> None:
        """The call's reply arrived (or it failed): its slot frees one window from now."""
        if self._in_flight <= 0:
            raise RuntimeError("release() without acquire()")
        self._in_flight -= 1
        self._finished.append(self._clock())
        if self._waiters:
            self._pump()

    @asynccontextmanager
    async def slot(self, priority: int = Priority.READ) -> AsyncIterator[float]:
        waited = await self.acquire(priority)
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
    async def slot(self, budget: Budget, priority: int = Priority.READ) -> AsyncIterator[None]:
        """Hold one slot of ``budget`` around a request: ``async with scheduler.slot(budget): ...``.

        ``priority`` (:class:`Priority`) decides who goes next when several calls wait for it.
        """
        window = self._windows.get(budget)
        if window is None:
            yield
            return
        async with window.slot(priority) as waited:
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
