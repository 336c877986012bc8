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


async def all_of(steps: Iterable[Awaitable[T]]) -> list[T]:
    """:func:`settled` over an iterable of steps (one awaitable to pass to another ``settled``)."""
    return await settled(*steps)


__all__ = ["all_of", "settled"]
