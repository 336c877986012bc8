"""HTTP transports for :class:`~algomirror.broker.client.OpenAlgoClient`, and the aiohttp one.

A transport POSTs a JSON body and hands back a :class:`Reply` (status, body bytes, content type), or
raises a :class:`~algomirror.broker.errors.BrokerError` from its own exception mapper. What a reply
*means* is decided once, transport-neutrally, by :func:`~algomirror.broker.errors.classify_reply`.

:class:`HostPool` is the engine's transport: ONE ``aiohttp.ClientSession`` with its own
``TCPConnector`` per OpenAlgo origin (``scheme://host:port``), shared by every account on that host,
created lazily on the running event loop and closed by :meth:`HostPool.aclose`. One pool belongs to one
event loop. :mod:`algomirror.broker.transport_httpx` keeps an httpx twin (benchmarks, comparisons).

Order calls have their own connection budget per origin (a second session, ``max_order_connections``),
so an exit never queues in the connector behind other accounts' reads; priority among order calls is
the rate scheduler's (per account), the connector itself serves its waiters first come, first served.

``before_send`` (the client's order gate) runs once a connection is acquired, pooled or new, and before
a byte of the request is written: whatever it raises (``OrdersSuspendedError``) surfaces unchanged, the
connection goes back to the pool unused, and nothing was sent. A call that waited for a connection is
therefore refused if the gate closed while it waited.

The mapper (:func:`map_aiohttp_error`) decides by *what may have reached the server*:

* could not connect, or no pooled connection came free in time: nothing was sent, so
  :class:`~algomirror.broker.errors.ConnectionFailedError` (retryable, for orders too);
* the connection dropped or timed out after the request was handed to the socket: an order's outcome
  is unknown (:class:`~algomirror.broker.errors.UnknownOutcomeError`); a read is retryable;
* the server answered but the reply could not be read: unknown for an order, malformed for a read.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.connector import Connection

from algomirror.broker.errors import (
    BrokerError,
    RejectedError,
    clip,
    lost_after_send,
    not_sent,
    unreadable_reply,
)

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server answered: HTTP ``status``, the raw ``body`` and its Content-Type header."""

    status: int
    body: bytes
    content_type: str | None = None


class Transport(Protocol):
    """A per-origin connection pool the client sends through."""

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        connect: float,
        read: float,
        endpoint: str,
        order: bool,
        before_send: Callable[[], None] | None = None,
        order_lane: bool = False,
    ) -> Reply:
        """POST JSON ``body`` to ``url``. ``connect`` bounds a TCP connect, ``read`` (seconds) both the
        wait for a free pooled connection and the wait for the reply. ``before_send`` is called as
        late as the transport can before the request is written; what it raises propagates and means
        nothing was sent. ``order`` says how a failure is classified (an order's lost reply is an
        unknown outcome) and which connections carry the call; ``order_lane`` sends a read through
        the order connections too (to keep them open). Raises BrokerError only (or what
        ``before_send`` raises)."""
        ...

    @property
    def hosts(self) -> tuple[str, ...]: ...

    async def aclose(self) -> None: ...


def origin_of(host_url: str) -> str:
    """``http://Host:5000/x/`` -> ``http://host:5000``: the key of the shared connection pool.

    Raises ValueError for anything that is not an http(s) URL with a host, and for one carrying a user
    name, password, query or fragment (the client's URLs never do: see
    :func:`~algomirror.broker.hosts.normalize_host_url`).
    """
    parts = urlsplit(host_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("host URL must look like http://host:port")
    if "@" in parts.netloc or "?" in host_url or "#" in host_url:
        raise ValueError("host URL must not carry credentials, a query or a fragment")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def encode_json(payload: dict[str, Any]) -> bytes:
    """The request body as the server reads it (compact UTF-8 JSON); ValueError for NaN or infinity."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


JSON_HEADERS = {"Content-Type": "application/json"}


def map_aiohttp_error(exc: BaseException, *, endpoint: str, order: bool) -> BaseException:
    """The :class:`BrokerError` for an aiohttp (or timeout) exception; anything else is returned as is.

    ``order`` marks a call that may create or change an order: see the module docstring.
    """
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        # DNS, refused, unreachable, TLS handshake: the connection never existed.
        return not_sent(f"could not connect: {clip(str(exc)) or name}", endpoint=endpoint)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # Raised only around acquiring a connection (pool wait or TCP connect): nothing was written.
        return not_sent(f"could not connect within the timeout ({name})", endpoint=endpoint)
    if isinstance(exc, aiohttp.InvalidURL):
        return RejectedError(f"invalid host URL: {clip(str(exc))}", endpoint=endpoint)
    if isinstance(exc, TimeoutError):
        # SocketTimeoutError (no byte within sock_read) or the total budget: the request was out.
        return lost_after_send(
            f"no reply within the timeout ({name})", endpoint=endpoint, order=order, timed_out=True
        )
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        # A reply arrived (the server may have acted) but its head or body cannot be read.
        return unreadable_reply(f"unreadable reply ({name})", endpoint=endpoint, order=order)
    if isinstance(exc, aiohttp.ClientError):
        # ServerDisconnectedError, ClientOSError (reset, broken pipe) after the connection was up.
        return lost_after_send(f"connection lost ({name})", endpoint=endpoint, order=order)
    return exc


# The per-request last-moment check, read by _GatedConnector in the task that sends the request.
_BEFORE_SEND: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "algomirror_before_send", default=None
)


class _GatedConnector(aiohttp.TCPConnector):
    """A TCPConnector that runs the request's ``before_send`` once it holds a connection.

    ``connect`` returns after the pool wait and any TCP connect and before aiohttp writes the request,
    so this is the last point at which refusing proves nothing was sent. On refusal the untouched
    connection is released back to the pool (a trace hook could not do that: it would leak it).
    """

    opened = 0  # TCP connections this connector made (a pooled one reused is not counted)

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        protocol = await super()._create_connection(req, traces, timeout)
        self.opened += 1
        return protocol

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        check = _BEFORE_SEND.get()
        if check is not None:
            try:
                check()
            except BaseException:
                connection.release()
                raise
        return connection


class HostPool:
    """Pooled keep-alive aiohttp sessions per OpenAlgo origin, shared by all its accounts.

    ``max_connections`` bounds concurrent reads per host and ``max_order_connections`` (default: the
    same) concurrent order calls, each in its own session; idle connections are kept for
    ``keepalive_expiry`` seconds. Sessions are created on first use, on the running loop; using the
    pool from a second event loop raises RuntimeError.
    """

    def __init__(
        self,
        *,
        max_connections: int = 50,
        max_order_connections: int | None = None,
        keepalive_expiry: float = 30.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be ≥ 1")
        if max_order_connections is not None and max_order_connections < 1:
            raise ValueError("max_order_connections must be ≥ 1")
        self._max_connections = max_connections
        self._max_order_connections = max_order_connections or max_connections
        self._keepalive = keepalive_expiry
        self._sessions: dict[tuple[str, bool], aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _session_for(self, url: str, *, order: bool) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("HostPool is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("HostPool belongs to another event loop: create one per loop")
        key = (origin_of(url), order)
        session = self._sessions.get(key)
        if session is None:
            connector = _GatedConnector(
                limit=self._max_order_connections if order else self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                headers={"Accept": "application/json", "User-Agent": "AlgoMirror"},
                # Accounts share the session: never carry one account's cookies into another's calls.
                cookie_jar=aiohttp.DummyCookieJar(),
                # Our timeouts are per call; this default only guards a forgotten one.
                timeout=aiohttp.ClientTimeout(total=60.0),
                trust_env=False,
                raise_for_status=False,
            )
            self._sessions[key] = session
        return session

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        connect: float,
        read: float,
        endpoint: str,
        order: bool,
        before_send: Callable[[], None] | None = None,
        order_lane: bool = False,
    ) -> Reply:
        """POST ``body`` (JSON bytes) to ``url`` through the origin's order or read session; see
        :class:`Transport` and the module docstring for ``before_send``. Raises BrokerError only (or
        what ``before_send`` raises, unchanged)."""
        session = self._session_for(url, order=order or order_lane)
        timeout = aiohttp.ClientTimeout(
            # ``connect`` covers the wait for a free pooled connection plus the TCP connect: when it
            # fires aiohttp raises ConnectionTimeoutError, which proves nothing was written.
            connect=read + connect,
            sock_connect=connect,
            sock_read=read,
            total=read + read + connect,
        )
        token = _BEFORE_SEND.set(before_send)
        try:
            async with session.post(
                url, data=body, headers=JSON_HEADERS, allow_redirects=False, timeout=timeout
            ) as response:
                content = await response.read()
                return Reply(response.status, content, response.headers.get("Content-Type"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            mapped = map_aiohttp_error(exc, endpoint=endpoint, order=order)
            if isinstance(mapped, BrokerError):
                raise mapped from exc
            raise
        finally:
            _BEFORE_SEND.reset(token)

    def connections_opened(self, *, order: bool) -> int:
        """TCP connections the order (or read) sessions of every origin have opened so far: a call that
        found a pooled connection adds nothing (what keeping connections warm is measured by)."""
        return sum(
            connector.opened
            for (_, lane), session in self._sessions.items()
            if lane == order and isinstance(connector := session.connector, _GatedConnector)
        )

    @property
    def hosts(self) -> tuple[str, ...]:
        """The origins with a session, in first-use order."""
        return tuple(dict.fromkeys(origin for origin, _ in self._sessions))

    async def aclose(self) -> None:
        """Close every session and its connections; the pool cannot be used afterwards."""
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


__all__ = ["HostPool", "Reply", "Transport", "encode_json", "map_aiohttp_error", "origin_of"]
