"""engine.concurrency: SharedLock (shared holders together, an exclusive holder alone, no starvation)
and staggered (the first steps of a fan-out leave before the rest are prepared)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest

from algomirror.engine.concurrency import SharedLock, settled, staggered


async def settle() -> None:
    """Let every runnable task take its next step (a few loop turns; no timing involved)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_shared_holders_hold_it_together_and_an_exclusive_one_waits_for_all_of_them() -> None:
    lock = SharedLock()
    release = asyncio.Event()
    inside: list[str] = []

    async def share(name: str) -> None:
        async with lock.shared():
            inside.append(name)
            await release.wait()
            inside.remove(name)

    async def alone() -> None:
        async with lock.exclusive():
            assert inside == []
            inside.append("alone")
            inside.remove("alone")

    sharers = [asyncio.create_task(share(n)) for n in ("a", "b")]
    await settle()
    assert sorted(inside) == ["a", "b"]
    exclusive = asyncio.create_task(alone())
    await settle()
    assert not exclusive.done()
    release.set()
    await asyncio.gather(*sharers, exclusive)
    assert inside == []


async def test_a_waiting_exclusive_holder_goes_before_later_shared_ones() -> None:
    lock = SharedLock()
    order: list[str] = []
    first_out = asyncio.Event()

    async def first() -> None:
        async with lock.shared():
            order.append("first")
            await first_out.wait()

    async def alone() -> None:
        async with lock.exclusive():
            order.append("alone")

    async def later() -> None:
        async with lock.shared():
            order.append("later")

    tasks = [asyncio.create_task(first())]
    await settle()
    tasks.append(asyncio.create_task(alone()))
    await settle()
    tasks.append(asyncio.create_task(later()))
    await settle()
    assert order == ["first"]  # the later shared holder waits behind the exclusive one
    first_out.set()
    await asyncio.gather(*tasks)
    assert order == ["first", "alone", "later"]


async def test_a_cancelled_exclusive_wait_lets_the_shared_waiters_in() -> None:
    lock = SharedLock()
    first_out = asyncio.Event()
    got: list[str] = []

    async def first() -> None:
        async with lock.shared():
            await first_out.wait()

    async def alone() -> None:
        async with lock.exclusive():
            got.append("alone")

    async def later() -> None:
        async with lock.shared():
            got.append("later")

    holder = asyncio.create_task(first())
    await settle()
    waiting = asyncio.create_task(alone())
    await settle()
    blocked = asyncio.create_task(later())
    await settle()
    assert got == []
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await settle()
    assert got == ["later"]  # in beside the first holder, which still holds it
    first_out.set()
    await asyncio.gather(holder, blocked)


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
