"""Running an account's or a batch's steps together without leaving any half done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar, cast

T = TypeVar("T")


async def settled(*steps: Awaitable[T]) -> list[T]:
    """Run ``steps`` concurrently and let every one finish before the first failure is raised: an
    account's orders are never left half-driven because another account's step failed (whatever is
    left open is resolved by the next attempt, never re-sent)."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)


# How many steps of a fan-out :func:`staggered` starts one by one before starting the rest together.
LEAD = 3


async def staggered(*steps: Awaitable[T], lead: int = LEAD) -> list[T]:
    """:func:`settled`, but the first ``lead`` steps are started one by one, each given one turn of
    the event loop before the next, and then the rest together: the first orders of a fan-out leave
    while the others are still being prepared.

    Why: on Python 3.11 aiohttp writes a request's body from a task of its own, which runs only
    after every step started before it has been prepared, so with fifty steps started together the
    first order reached the broker about 6 ms after it was handed over. Staggering every step
    delays the last one instead (the replies of the first are handled in between: with fifty
    accounts, the last exit order came 90 ms later), hence only a lead. If the caller is cancelled
    while starting them, the steps started are cancelled (as ``gather`` does) and the others are
    never run."""
    tasks: list[asyncio.Future[T]] = []
    pending = list(steps)
    try:
        while pending and len(tasks) < lead:
            tasks.append(asyncio.ensure_future(pending.pop(0)))
            if pending:
                await asyncio.sleep(0)
    except BaseException:
        for task in tasks:
            task.cancel()
        for step in pending:
            if asyncio.iscoroutine(step):
                step.close()
        raise
    return await settled(*tasks, *pending)


async def all_of(steps: Iterable[Awaitable[T]]) -> list[T]:
    """:func:`settled` over an iterable of steps (one awaitable to pass to another ``settled``)."""
    return await settled(*steps)


class BusyLock:
    """An asyncio lock that says whether anyone holds it *or waits for it* (:meth:`busy`), so that a
    caller can pass over it instead of queueing: an exit of a whole run takes the lock of every account
    that is free and leaves a busy account for after its current holder. Not reentrant; use
    ``async with``."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._wanted = 0  # holders and waiters

    def busy(self) -> bool:
        """Whether a task holds the lock or waits for it (``async with`` would wait)."""
        return self._wanted > 0

    async def __aenter__(self) -> None:
        self._wanted += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._wanted -= 1
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._wanted -= 1
        self._lock.release()


__all__ = ["BusyLock", "all_of", "settled", "staggered"]
