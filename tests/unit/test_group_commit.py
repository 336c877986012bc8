"""GroupCommit: concurrent submissions share one write; a refused group is written item by item, so only
the submission that caused the refusal sees the error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from algomirror.engine.group_commit import GroupCommit


class Store:
    """A write that records each call's items and refuses any group holding a negative number."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def write(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [i * 10 for i in items]


async def test_submissions_ready_together_are_written_in_one_call() -> None:
    store = Store()
    group: GroupCommit[int, int] = GroupCommit(store.write)

    results = await asyncio.gather(*(group.submit(i) for i in range(1, 6)))

    assert results == [10, 20, 30, 40, 50]
    assert store.calls == [[1, 2, 3, 4, 5]]


async def test_later_submissions_form_a_group_of_their_own() -> None:
    store = Store()
    group: GroupCommit[int, int] = GroupCommit(store.write)

    async def late(i: int) -> int:
        await asyncio.sleep(0.05)
        return await group.submit(i)

    results = await asyncio.gather(group.submit(1), late(2), late(3))

    assert results == [10, 20, 30]
    assert store.calls[0] == [1]
    assert sorted(i for call in store.calls[1:] for i in call) == [2, 3]


async def test_a_refused_group_is_retried_one_by_one_and_only_the_bad_item_fails() -> None:
    store = Store()
    group: GroupCommit[int, int] = GroupCommit(store.write)

    results = await asyncio.gather(group.submit(1), group.submit(-2), group.submit(3), return_exceptions=True)

    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError)
    assert store.calls == [[1, -2, 3], [1], [-2], [3]]


async def test_a_lone_refused_submission_raises_its_error() -> None:
    group: GroupCommit[int, int] = GroupCommit(Store().write)

    with pytest.raises(ValueError, match="negative"):
        await group.submit(-1)
