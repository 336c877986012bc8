"""engine.concurrency: BusyLock (one holder at a time; busy while held or waited for) and staggered
(the first steps of a fan-out leave before the rest are prepared)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest

from algomirror.engine.concurrency import BusyLock, settled, staggered


async def settle() -> None:
    """Let every runnable task take its next step (a few loop turns; no timing involved)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_busy_lock_is_busy_while_held_and_while_waited_for_and_free_after() -> None:
    lock = BusyLock()
    assert not lock.busy()
    release = asyncio.Event()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with lock:
            order.append(name)
            await release.wait()

    first = asyncio.create_task(hold("first"))
    await settle()
    assert lock.busy() and order == ["first"]
    second = asyncio.create_task(hold("second"))
    await settle()
    assert order == ["first"]  # one holder at a time
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"] and not lock.busy()


async def test_a_cancelled_wait_for_a_busy_lock_leaves_it_as_it_was() -> None:
    lock = BusyLock()
    release = asyncio.Event()

    async def hold() -> None:
        async with lock:
            await release.wait()

    holder = asyncio.create_task(hold())
    await settle()
    waiting = asyncio.create_task(hold())
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lock.busy()  # still held by the first
    release.set()
    await holder
    assert not lock.busy()
    async with lock:  # and free to take
        assert lock.busy()


def fan_out(log: list[str], release: asyncio.Event) -> Callable[[int], Awaitable[int]]:
    """A step shaped like an aiohttp POST on Python 3.11: it prepares the request, hands the write of
    its body to a task of its own, then waits for the reply."""

    async def step(i: int) -> int:
        log.append(f"prepare {i}")

        async def write() -> None:
            log.append(f"write {i}")

        writing = asyncio.create_task(write())
        await release.wait()
        await writing
        return i

    return step


async def run_fan_out(start: Callable[..., Awaitable[list[int]]], count: int) -> tuple[list[int], list[str]]:
    log: list[str] = []
    release = asyncio.Event()
    step = fan_out(log, release)
    task = asyncio.create_task(start(*(step(i) for i in range(count))))
    await settle()
    release.set()
    return await task, log


async def test_staggered_writes_the_first_steps_before_preparing_the_rest() -> None:
    results, log = await run_fan_out(staggered, 6)
    assert results == list(range(6))
    # The lead (3) goes one by one, each written before the next is prepared; then the rest together.
    assert log[:6] == ["prepare 0", "write 0", "prepare 1", "write 1", "prepare 2", "write 2"]
    assert log[6:] == ["prepare 3", "prepare 4", "prepare 5", "write 3", "write 4", "write 5"]
    # What it avoids: started together, the first write waits for every step to be prepared.
    _, together = await run_fan_out(settled, 6)
    assert together.index("write 0") == 6


async def test_staggered_lets_every_step_finish_before_raising_the_first_failure() -> None:
    finished: list[int] = []

    async def step(i: int) -> int:
        await asyncio.sleep(0)
        if i == 1:
            raise ValueError("step 1 failed")
        finished.append(i)
        return i

    with pytest.raises(ValueError, match="step 1 failed"):
        await staggered(*(step(i) for i in range(5)))
    assert sorted(finished) == [0, 2, 3, 4]


async def test_staggered_cancelled_while_starting_cancels_what_started_and_runs_nothing_else() -> None:
    started: list[int] = []
    never = asyncio.Event()

    async def step(i: int) -> int:
        started.append(i)
        await never.wait()
        return i

    steps = [step(i) for i in range(4)]
    task = asyncio.create_task(staggered(*steps))
    await asyncio.sleep(0)  # the first step is started; the caller waits for its turn
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert started and len(started) < 4
    assert all(inspect.getcoroutinestate(s) == inspect.CORO_CLOSED for s in steps)
