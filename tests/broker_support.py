"""Loopback helpers for broker-client tests: an event loop on its own thread, a TCP proxy that counts
the connections a client opens (to prove connection reuse), and a raw HTTP server whose socket a test
controls (to make disconnects and silences happen for real)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class LoopThread:
    """An asyncio loop on its own thread, for servers that sync and async tests share."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        async def runner() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class CountingProxy:
    """A TCP proxy that counts the connections it accepts (= TCP connections the client opened)."""

    def __init__(self, loops: LoopThread, target_port: int) -> None:
        self.loops = loops
        self.target_port = target_port
        self.accepted = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        async def up() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        self.loops.call(up)

    def stop(self) -> None:
        async def down() -> None:
            assert self._server is not None
            self._server.close()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        self.loops.call(down)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()
            self._handlers.discard(task)


class RawHttpServer:
    """A loopback HTTP/1.1 server on the running loop that gives exact control over the socket.

    Each request is read in full (head and Content-Length body) and recorded in ``seen`` as
    (endpoint, JSON body) BEFORE the scripted action runs, so a test knows what reached the server.
    Actions per endpoint, consumed in order (then the default ``reply``):
    ``"reply"`` answers ``{"status": "success", ...}``; ``"close"`` closes the socket without a byte of
    reply (a disconnect after the request was written); ``"hold"`` keeps the connection silent until
    :meth:`release`; ``"forbidden"`` answers 403 "Invalid openalgo apikey".
    """

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []
        self.script: dict[str, list[str]] = {}
        self.accepted = 0  # TCP connections accepted
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._released = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> RawHttpServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, endpoint: str, *actions: str) -> None:
        self.script.setdefault(endpoint, []).extend(actions)

    def release(self) -> None:
        self._released.set()

    def count(self, endpoint: str) -> int:
        return sum(1 for name, _ in self.seen if name == endpoint)

    def endpoints(self) -> list[str]:
        return [name for name, _ in self.seen]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length)
                endpoint = path.rsplit("/", 1)[-1]
                self.seen.append((endpoint, json.loads(body) if body else {}))
                queue = self.script.get(endpoint) or []
                action = queue.pop(0) if queue else "reply"
                if action == "close":
                    writer.close()
                    return
                if action == "hold":
                    await self._released.wait()
                if action == "forbidden":
                    status = b"403 FORBIDDEN"
                    reply: dict[str, object] = {"status": "error", "message": "Invalid openalgo apikey"}
                else:
                    status, reply = b"200 OK", self._reply(endpoint)
                payload = json.dumps(reply).encode()
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        finally:
            writer.close()
            self._handlers.discard(task)

    @staticmethod
    def _reply(endpoint: str) -> dict[str, object]:
        if endpoint == "funds":
            return {"status": "success", "data": {"availablecash": "100.00"}}
        if endpoint == "ping":
            return {"status": "success", "data": {"broker": "raw", "message": "pong"}}
        return {"status": "success", "orderid": "25112200000001"}
