"""engine.concurrency.SharedLock: shared holders together, an exclusive holder alone, no starvation."""

from __future__ import annotations

import asyncio

import pytest

from algomirror.engine.concurrency import SharedLock


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
