"""Group commit: writes submitted by many tasks of one event loop at about the same moment are run as
ONE database transaction in a worker thread.

The entry fan-out has a hundred accounts finishing the same round within milliseconds of each other;
each would otherwise pay a transaction of its own (begin, fence check, commit, a thread hop) and queue
for SQLite's single writer. A :class:`GroupCommit` takes the first submission, lets every task that is
ready in the same loop iteration add its own, and writes them together; submissions that arrive while
that write runs form the next group. A group the database refuses is written again one submission at
a time, so one account's conflict is that account's error only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence, Sized
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741  (one submission)
O = TypeVar("O")  # noqa: E741  (its result)
T = TypeVar("T")


class GroupCommit(Generic[I, O]):
    """Runs ``write(items) -> results`` (one transaction, called in a worker thread; one result per item,
    in order) for groups of items submitted concurrently with :meth:`submit`."""

    def __init__(self, write: Callable[[Sequence[I]], Sequence[O]]) -> None:
        self._write = write
        self._queue: list[tuple[I, asyncio.Future[O]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> O:
        """Write ``item`` with whatever else is submitted now; its result, or the exception its own
        write raised (a refused group is retried item by item)."""
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(0)  # let the other tasks that are ready now submit theirs
                group, self._queue = self._queue, []
                await self._write_group(group)
        finally:
            self._task = None
            # Only when this task itself was cancelled (the loop is stopping): nobody must wait forever.
            for _, future in self._queue:
                if not future.done():
                    future.cancel()
            self._queue = []

    async def _write_group(self, group: list[tuple[I, asyncio.Future[O]]]) -> None:
        try:
            results = await asyncio.to_thread(self._write, [item for item, _ in group])
        except Exception as exc:  # noqa: BLE001  (not swallowed: handed to the submitters)
            if len(group) == 1:
                _fail(group[0][1], exc)
                return
            for item, future in group:  # one submission's conflict must not fail the others
                try:
                    (result,) = await asyncio.to_thread(self._write, [item])
                except Exception as single:  # noqa: BLE001  (handed to its submitter)
                    _fail(future, single)
                else:
                    _done(future, result)
            return
        except BaseException:
            for _, future in group:
                if not future.done():
                    future.cancel()
            raise
        for (_, future), result in zip(group, results, strict=True):
            _done(future, result)


def _done(future: asyncio.Future[O], result: O) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[O], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


def split_groups(flat: Sequence[T], groups: Sequence[Sized]) -> list[list[T]]:
    """``flat`` (one result per item of the groups, in order: a group commit's write) cut back into
    the groups whose items it holds."""
    out: list[list[T]] = []
    at = 0
    for group in groups:
        out.append(list(flat[at : at + len(group)]))
        at += len(group)
    return out


__all__ = ["GroupCommit", "split_groups"]
