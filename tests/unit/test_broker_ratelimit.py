"""Rate scheduler on a fake clock: moving-window budgets, fairness, independence (no real sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from algomirror.broker.ratelimit import (
    Budget,
    Priority,
    RateLimits,
    RateScheduler,
    SlidingWindow,
    budget_for,
)


class FakeTime:
    """Monotonic seconds that move only when a waiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


async def _call(scheduler: RateScheduler, budget: Budget) -> None:
    """An instantaneous call: take a slot and get the reply at once."""
    async with scheduler.slot(budget):
        pass


def max_in_any_window(starts: list[float], window: float) -> int:
    return max(sum(1 for s in starts if t <= s < t + window - 1e-9) for t in starts)


async def test_acquire_when_burst_exceeds_rate_never_puts_more_than_rate_in_a_window() -> None:
    t = FakeTime()
    window = SlidingWindow(10, 1.0, clock=t.clock, sleep=t.sleep)
    starts: list[float] = []

    async def one() -> None:
        async with window.slot():
            starts.append(t.now)

    await asyncio.gather(*(one() for _ in range(35)))
    assert len(starts) == 35
    assert max_in_any_window(starts, 1.0) == 10
    assert starts[:10] == [0.0] * 10
    assert t.now == pytest.approx(3.0)  # 35 calls at 10 per window: starts at 0, 1, 2, 3


async def test_acquire_when_many_wait_serves_them_in_arrival_order() -> None:
    t = FakeTime()
    window = SlidingWindow(2, 1.0, clock=t.clock, sleep=t.sleep)
    order: list[int] = []

    async def one(i: int) -> None:
        async with window.slot():
            order.append(i)

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0)  # arrival order = i
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_acquire_when_under_rate_does_not_wait() -> None:
    t = FakeTime()
    window = SlidingWindow(5, 1.0, clock=t.clock, sleep=t.sleep)
    for _ in range(5):
        async with window.slot() as waited:
            assert waited == 0.0
    assert t.sleeps == []
    assert window.in_window() == 5


async def test_scheduler_when_order_budget_full_other_calls_still_start() -> None:
    t = FakeTime()
    scheduler = RateScheduler(
        RateLimits(order=2, smart=2, other=50, margin=0.0), clock=t.clock, sleep=t.sleep
    )
    for _ in range(2):
        await _call(scheduler, Budget.ORDER)
    for _ in range(50):
        await _call(scheduler, Budget.OTHER)
    await _call(scheduler, Budget.SMART)
    assert t.now == 0.0  # no budget borrowed from another
    await _call(scheduler, Budget.ORDER)
    assert t.now == pytest.approx(1.0)


async def test_scheduler_when_margin_set_stretches_window() -> None:
    t = FakeTime()
    scheduler = RateScheduler(RateLimits(order=1, margin=0.1), clock=t.clock, sleep=t.sleep)
    await _call(scheduler, Budget.ORDER)
    await _call(scheduler, Budget.ORDER)
    assert t.now == pytest.approx(1.1)


async def test_scheduler_when_two_accounts_busy_one_never_delays_the_other() -> None:
    t = FakeTime()
    release = asyncio.Event()

    async def stuck_sleep(seconds: float) -> None:
        await release.wait()  # the busy account's waiter stays parked until released
        t.now += seconds

    busy = RateScheduler(RateLimits(order=1, margin=0.0), clock=t.clock, sleep=stuck_sleep)
    idle = RateScheduler(RateLimits(order=1, margin=0.0), clock=t.clock, sleep=t.sleep)
    await _call(busy, Budget.ORDER)
    blocked = asyncio.create_task(_call(busy, Budget.ORDER))
    await asyncio.sleep(0)
    assert not blocked.done()
    await asyncio.wait_for(_call(idle, Budget.ORDER), timeout=1.0)
    assert idle.waited == 0.0
    assert not blocked.done()
    release.set()
    await blocked
    assert busy.waited == pytest.approx(1.0)


async def test_scheduler_when_slow_call_in_flight_holds_only_its_own_slot() -> None:
    t = FakeTime()
    scheduler = RateScheduler(RateLimits(other=2, margin=0.0), clock=t.clock, sleep=t.sleep)
    reply = asyncio.Event()

    async def slow_call() -> None:
        async with scheduler.slot(Budget.OTHER):
            await reply.wait()

    slow = asyncio.create_task(slow_call())
    await asyncio.sleep(0)
    await _call(scheduler, Budget.OTHER)  # the second slot is free: no wait
    assert t.now == 0.0
    # The third waits: one slot is in flight, the other finished less than a window ago, so it
    # starts when that window has passed (the fake clock jumps there).
    await _call(scheduler, Budget.OTHER)
    assert t.now == pytest.approx(1.0)
    assert not slow.done()
    reply.set()
    await slow


async def test_window_when_every_slot_in_flight_waits_for_a_reply_then_a_window() -> None:
    t = FakeTime()
    window = SlidingWindow(1, 1.0, clock=t.clock, sleep=t.sleep)
    await window.acquire()
    waiter = asyncio.create_task(window.acquire())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()  # nothing finished: no timer can free the slot
    t.now = 5.0
    window.release()  # reply at t=5: arrivals could have happened up to then
    assert await waiter == pytest.approx(1.0 + 5.0)
    assert t.now == pytest.approx(6.0)


def test_release_when_nothing_acquired_raises() -> None:
    with pytest.raises(RuntimeError):
        SlidingWindow(1, 1.0).release()


async def test_scheduler_when_unlimited_never_waits() -> None:
    t = FakeTime()
    scheduler = RateScheduler(RateLimits.unlimited(), clock=t.clock, sleep=t.sleep)
    for _ in range(1000):
        await _call(scheduler, Budget.ORDER)
    assert t.now == 0.0


def test_rate_limits_when_zero_rejected() -> None:
    with pytest.raises(ValueError):
        RateLimits(order=0)


@pytest.mark.parametrize(
    ("endpoint", "budget"),
    [
        ("placeorder", Budget.ORDER),
        ("modifyorder", Budget.ORDER),
        ("cancelorder", Budget.ORDER),
        ("optionsmultiorder", Budget.ORDER),
        ("placesmartorder", Budget.SMART),
        ("splitorder", Budget.OTHER),
        ("basketorder", Budget.OTHER),
        ("funds", Budget.OTHER),
        ("quotes", Budget.OTHER),
    ],
)
def test_budget_for_when_endpoint_named_matches_openalgo_routes(endpoint: str, budget: Budget) -> None:
    assert budget_for(endpoint) is budget


async def _settle(window: SlidingWindow, waiting: int) -> None:
    """Let the queued tasks reach their wait (bounded number of loop turns, no timing)."""
    for _ in range(100):
        if window.waiting == waiting:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"expected {waiting} waiters, have {window.waiting}")


async def test_acquire_when_priorities_queue_serves_exits_then_entries_then_reads_fifo_within() -> None:
    t = FakeTime()
    window = SlidingWindow(1, 1.0, clock=t.clock, sleep=t.sleep)
    served: list[str] = []

    async def one(label: str, priority: Priority) -> None:
        async with window.slot(priority):
            served.append(label)

    await window.acquire()  # the budget is busy: everyone below has to queue
    arrivals = [
        ("read-1", Priority.READ),
        ("entry-1", Priority.ENTRY),
        ("exit-1", Priority.EXIT),
        ("read-2", Priority.READ),
        ("entry-2", Priority.ENTRY),
        ("exit-2", Priority.EXIT),
    ]
    tasks = []
    for count, (label, priority) in enumerate(arrivals, start=1):
        tasks.append(asyncio.create_task(one(label, priority)))
        await _settle(window, count)  # arrival order is the list order
    window.release()
    await asyncio.gather(*tasks)
    assert served == ["exit-1", "exit-2", "entry-1", "entry-2", "read-1", "read-2"]
    assert t.now == pytest.approx(6.0)  # still one per window: priority reorders, never adds


async def test_acquire_when_exit_arrives_behind_waiting_reads_takes_the_next_slot() -> None:
    t = FakeTime()
    window = SlidingWindow(2, 1.0, clock=t.clock, sleep=t.sleep)
    served: list[str] = []

    async def one(label: str, priority: Priority) -> None:
        async with window.slot(priority):
            served.append(label)

    first, second = await window.acquire(), await window.acquire()
    assert (first, second) == (0.0, 0.0)
    reads = [asyncio.create_task(one(f"read-{i}", Priority.READ)) for i in range(3)]
    await _settle(window, 3)
    exit_task = asyncio.create_task(one("exit", Priority.EXIT))
    await _settle(window, 4)
    window.release()  # one slot frees: the exit, though it came last
    await exit_task
    assert served == ["exit"]
    window.release()
    await asyncio.gather(*reads)
    assert served == ["exit", "read-0", "read-1", "read-2"]


async def test_acquire_when_waiter_cancelled_gives_up_its_place_and_the_next_is_served() -> None:
    t = FakeTime()
    window = SlidingWindow(1, 1.0, clock=t.clock, sleep=t.sleep)
    served: list[str] = []

    async def one(label: str, priority: Priority) -> None:
        async with window.slot(priority):
            served.append(label)

    await window.acquire()
    exit_task = asyncio.create_task(one("exit", Priority.EXIT))
    await _settle(window, 1)
    read_task = asyncio.create_task(one("read", Priority.READ))
    await _settle(window, 2)
    exit_task.cancel()
    await _settle(window, 1)
    window.release()
    await read_task
    assert served == ["read"]
    assert window.in_window() == 1  # the cancelled waiter left no slot behind


async def test_scheduler_slot_when_priority_given_orders_waiters_of_the_same_budget() -> None:
    t = FakeTime()
    scheduler = RateScheduler(RateLimits(order=1, margin=0.0), clock=t.clock, sleep=t.sleep)
    window = scheduler.window(Budget.ORDER)
    assert window is not None
    served: list[str] = []

    async def one(label: str, priority: Priority) -> None:
        async with scheduler.slot(Budget.ORDER, priority):
            served.append(label)

    await _call(scheduler, Budget.ORDER)  # finished just now: the next waits a window
    entry = asyncio.create_task(one("entry", Priority.ENTRY))
    await _settle(window, 1)
    exit_task = asyncio.create_task(one("exit", Priority.EXIT))
    await asyncio.gather(entry, exit_task)
    assert served == ["exit", "entry"]
