"""The httpx transport: the client's previous network layer, kept for comparisons (``bench/client_pool``).

Same contract as :class:`algomirror.broker.transport.HostPool` (one pooled ``httpx.AsyncClient`` per
origin), with its own exception mapper :func:`map_httpx_error`. The engine uses the aiohttp pool.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from algomirror.broker.errors import (
    BrokerError,
    RejectedError,
    clip,
    lost_after_send,
    not_sent,
    unreadable_reply,
)
from algomirror.broker.transport import JSON_HEADERS, Reply, origin_of


def map_httpx_error(exc: BaseException, *, endpoint: str, order: bool) -> BaseException:
    """The :class:`BrokerError` for an httpx exception; anything else is returned unchanged.

    Connect failures and pool timeouts mean nothing was sent (retryable, for orders too); a timeout or
    dropped connection after that is an unknown outcome for an order; an undecodable body is unknown
    for an order and malformed for a read.
    """
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return not_sent(f"could not connect ({name})", endpoint=endpoint)
    if isinstance(exc, httpx.ConnectError):
        return not_sent(f"could not connect: {clip(str(exc)) or name}", endpoint=endpoint)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return RejectedError(f"invalid host URL: {clip(str(exc))}", endpoint=endpoint)
    if isinstance(exc, httpx.TimeoutException):
        return lost_after_send(
            f"no reply within the timeout ({name})", endpoint=endpoint, order=order, timed_out=True
        )
    if isinstance(exc, httpx.DecodingError):
        return unreadable_reply(f"unreadable reply body ({name})", endpoint=endpoint, order=order)
    if isinstance(exc, httpx.TransportError):
        return lost_after_send(f"connection lost ({name})", endpoint=endpoint, order=order)
    return exc


class HttpxHostPool:
    """One pooled keep-alive ``httpx.AsyncClient`` per OpenAlgo origin (see :class:`HostPool`).

    ``transport`` (tests) replaces httpx's network layer.
    """

    def __init__(
        self,
        *,
        max_connections: int = 50,
        max_keepalive: int = 20,
        keepalive_expiry: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=keepalive_expiry,
        )
        self._transport = transport
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._closed = False

    def _client_for(self, url: str) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("HttpxHostPool is closed")
        key = origin_of(url)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                limits=self._limits,
                transport=self._transport,
                headers={"Accept": "application/json", "User-Agent": "AlgoMirror"},
                timeout=httpx.Timeout(30.0),
                follow_redirects=False,
                trust_env=False,
            )
            self._clients[key] = client
        return client

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
        """POST ``body`` (JSON bytes) to ``url``. Raises BrokerError only (or what ``before_send``
        raises). httpx has no hook once a connection is held, so ``before_send`` runs before the pool
        wait: this twin is for benchmarks, not for the engine."""
        client = self._client_for(url)
        if before_send is not None:
            before_send()
        # Waiting for a free pooled connection counts against the read budget: nothing was sent yet.
        timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=read)
        try:
            response = await client.post(url, content=body, headers=JSON_HEADERS, timeout=timeout)
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            # RequestError, not just TransportError: a body that fails to decode (DecodingError)
            # arrives after the server acted and must be classified too.
            mapped = map_httpx_error(exc, endpoint=endpoint, order=order)
            if isinstance(mapped, BrokerError):
                raise mapped from exc
            raise
        return Reply(response.status_code, response.content, response.headers.get("content-type"))

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self._clients)

    async def aclose(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> HttpxHostPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


__all__ = ["HttpxHostPool", "map_httpx_error"]
