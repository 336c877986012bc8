"""Pieces shared by the tests that run the real FeedManager against the paper exchange over loopback
(the feed manager's own tests and the risk engine's fault tests): a loopback TCP proxy the test can close,
the background ticker that moves the exchange's manual clock, and a poll-until-present helper.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from tests.helpers import eventually_async
from tests.sim_fixtures import SimHandle

T = TypeVar("T")
DEADLINE = 15.0


class Proxy:
    """A loopback TCP forwarder to the exchange's WebSocket port, for the primary account's feed: the
    test closes it (what a broker host going away looks like to the feed) while the other accounts keep
    their own connections, and can bring it back on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


async def tick_forever(sim: SimHandle) -> None:
    """Advance the exchange's manual clock one simulated second every 0.1 s, until cancelled."""
    while True:
        await asyncio.to_thread(sim.control.advance, 1)
        await asyncio.sleep(0.1)  # pacing of the simulated market, not a wait for a result


async def until(check: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Poll ``check`` until it returns something truthy (returned), failing after ``timeout`` seconds."""

    async def probe() -> T | None:
        return check()

    result = await eventually_async(probe, timeout=timeout, what=what)
    assert result is not None
    return result
