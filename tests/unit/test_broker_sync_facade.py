"""BackgroundLoop: coroutines from sync threads, with results, errors and timeouts (no network)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from algomirror.broker.errors import BrokerTimeoutError, RejectedError, UnknownOutcomeError
from algomirror.broker.sync_facade import BackgroundLoop


@pytest.fixture
def bg() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop(name="test-broker-loop")
    yield loop
    loop.close()


def test_run_when_coroutine_returns_gives_result_from_loop_thread(bg: BackgroundLoop) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert bg.run(where, timeout=5) == "test-broker-loop"


def test_run_when_coroutine_raises_propagates_same_error(bg: BackgroundLoop) -> None:
    async def boom() -> None:
        raise RejectedError("Cannot cancel order in complete status")

    with pytest.raises(RejectedError, match="complete status"):
        bg.run(boom, timeout=5)


@pytest.mark.parametrize(("order", "error"), [(False, BrokerTimeoutError), (True, UnknownOutcomeError)])
def test_run_when_coroutine_outlives_timeout_cancels_it_and_raises(
    bg: BackgroundLoop, order: bool, error: type[Exception]
) -> None:
    cancelled = threading.Event()

    async def never() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(error):
        bg.run(never, timeout=0.05, order=order)
    assert cancelled.wait(5)


def test_run_when_many_threads_call_at_once_all_get_their_own_result(bg: BackgroundLoop) -> None:
    results: dict[int, int] = {}

    def worker(i: int) -> None:
        async def square() -> int:
            await asyncio.sleep(0)
            return i * i

        results[i] = bg.run(square, timeout=5)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: i * i for i in range(16)}


def test_close_when_used_again_restarts_loop(bg: BackgroundLoop) -> None:
    async def one() -> int:
        return 1

    assert bg.run(one, timeout=5) == 1
    bg.close()
    assert bg.run(one, timeout=5) == 1
