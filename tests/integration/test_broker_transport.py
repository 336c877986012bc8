"""The aiohttp transport's exception mapping, with each fault made to happen for real on loopback.

A raw server reads the whole request and then closes the socket without replying (the request was
written: unknown outcome for an order), or stays silent; a closed port and a full pool show the
"nothing was sent" side (retryable, for orders too).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.errors import (
    BrokerTimeoutError,
    ConnectionFailedError,
    OrdersSuspendedError,
    RetryableError,
    UnknownOutcomeError,
)
from algomirror.broker.ratelimit import RateLimits
from algomirror.broker.wire import Action, OrderRequest
from tests.broker_support import RawHttpServer
from tests.helpers import eventually_async

KEY = "transport-key-0123456789"
NO_WAIT = RetryPolicy(attempts=3, base=0.001, cap=0.002)


@pytest.fixture
async def raw() -> AsyncIterator[RawHttpServer]:
    server = await RawHttpServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def pool() -> AsyncIterator[HostPool]:
    async with HostPool() as shared:
        yield shared


def client(url: str, pool: HostPool, **kwargs: object) -> OpenAlgoClient:
    kwargs.setdefault("timeouts", Timeouts(connect=1.0, read=2.0, order=2.0))
    kwargs.setdefault("retry", NO_WAIT)
    kwargs.setdefault("limits", RateLimits.unlimited())
    return OpenAlgoClient(url, KEY, pool=pool, **kwargs)  # type: ignore[arg-type]


def buy() -> OrderRequest:
    return OrderRequest(symbol="SBIN", exchange="NSE", action=Action.BUY, quantity=1)


async def test_place_when_server_closes_after_reading_request_raises_unknown_outcome_sent_once(
    raw: RawHttpServer, pool: HostPool
) -> None:
    raw.then("placeorder", "close")
    with pytest.raises(UnknownOutcomeError) as info:
        await client(raw.url, pool).place_order(buy(), strategy="S1")
    assert not isinstance(info.value, RetryableError)
    assert "connection lost" in info.value.message
    assert raw.count("placeorder") == 1
    assert raw.seen[0][1]["apikey"] == KEY  # the whole request had reached the server
    assert KEY not in info.value.message


async def test_read_when_server_closes_after_reading_request_retries_then_raises_connection_failed(
    raw: RawHttpServer, pool: HostPool
) -> None:
    raw.then("funds", "close", "close", "close")
    with pytest.raises(ConnectionFailedError):
        await client(raw.url, pool).funds()
    assert raw.count("funds") == 3


async def test_read_when_server_closes_once_is_retried_and_succeeds(
    raw: RawHttpServer, pool: HostPool
) -> None:
    raw.then("funds", "close")
    funds = await client(raw.url, pool).funds()
    assert funds.availablecash is not None
    assert raw.count("funds") == 2


async def test_place_when_reply_never_comes_raises_unknown_outcome(
    raw: RawHttpServer, pool: HostPool
) -> None:
    raw.then("placeorder", "hold")
    fast = client(raw.url, pool, timeouts=Timeouts(connect=1.0, read=0.3, order=0.3))
    with pytest.raises(UnknownOutcomeError) as info:
        await fast.place_order(buy(), strategy="S1")
    assert "timeout" in info.value.message
    assert raw.count("placeorder") == 1


async def test_read_when_reply_never_comes_raises_timeout(raw: RawHttpServer, pool: HostPool) -> None:
    raw.then("funds", "hold")
    fast = client(raw.url, pool, timeouts=Timeouts(connect=1.0, read=0.3), retry=RetryPolicy(attempts=1))
    with pytest.raises(BrokerTimeoutError):
        await fast.funds()


async def test_place_when_nothing_listens_raises_connection_failed_not_unknown(pool: HostPool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the connect is refused
        with pytest.raises(ConnectionFailedError) as info:
            await client(f"http://127.0.0.1:{port}", pool).place_order(buy(), strategy="S1")
    assert "could not connect" in info.value.message


async def test_place_when_pool_stays_full_raises_connection_failed_and_sends_nothing(
    raw: RawHttpServer,
) -> None:
    raw.then("placeorder", "hold")
    async with HostPool(max_order_connections=1) as tiny:
        slow_order = client(raw.url, tiny, timeouts=Timeouts(connect=1.0, read=10.0, order=10.0))
        holder = asyncio.create_task(slow_order.place_order(buy(), strategy="HELD"))

        async def order_arrived() -> bool:
            return raw.count("placeorder") == 1  # the only order connection is now busy

        await eventually_async(order_arrived, timeout=5, what="held order reached the server")
        order = client(raw.url, tiny, timeouts=Timeouts(connect=0.1, read=0.2, order=0.2))
        with pytest.raises(ConnectionFailedError) as info:
            await order.place_order(buy(), strategy="S1")
        assert "could not connect within the timeout" in info.value.message
        assert raw.count("placeorder") == 1
        raw.release()
        assert (await holder).orderid == "25112200000001"


async def test_post_when_before_send_refuses_on_a_new_connection_sends_nothing_and_frees_it(
    raw: RawHttpServer,
) -> None:
    """The check runs once the TCP connection exists; its error surfaces as raised (not as an
    unknown outcome) and the untouched connection returns to the pool for the next call."""

    def refuse() -> None:
        raise OrdersSuspendedError("order calls suspended (test); nothing was sent", endpoint="placeorder")

    async with HostPool(max_order_connections=1) as tiny:
        with pytest.raises(OrdersSuspendedError):
            await tiny.post(
                f"{raw.url}/api/v1/placeorder",
                b'{"apikey":"k"}',
                connect=1.0,
                read=2.0,
                endpoint="placeorder",
                order=True,
                before_send=refuse,
            )

        async def connection_made() -> bool:
            return raw.accepted == 1  # the refusal came after the TCP connect, not instead of it

        await eventually_async(connection_made, timeout=5, what="the refused call had connected")
        assert raw.seen == []
        reply = await asyncio.wait_for(
            tiny.post(
                f"{raw.url}/api/v1/placeorder",
                b'{"apikey":"k"}',
                connect=1.0,
                read=2.0,
                endpoint="placeorder",
                order=True,
            ),
            5,
        )
    assert reply.status == 200
    assert raw.endpoints() == ["placeorder"]
    assert raw.accepted == 1  # the refused call's connection went back to the pool and was reused


def keyed(url: str, pool: HostPool, n: int) -> OpenAlgoClient:
    return OpenAlgoClient(
        url,
        f"{KEY}-{n}",
        pool=pool,
        timeouts=Timeouts(connect=1.0, read=2.0, order=2.0),
        retry=NO_WAIT,
        limits=RateLimits.unlimited(),
    )


async def test_warming_the_order_lane_of_accounts_at_once_lets_their_next_orders_connect_no_more(
    raw: RawHttpServer, pool: HostPool
) -> None:
    # Four accounts on one origin, as the paper exchange serves them: the warm-up's pings go together,
    # so the order session keeps four open connections and four orders at once need no connect.
    clients = [keyed(raw.url, pool, n) for n in range(4)]
    await asyncio.gather(*(c.warm_order_lane() for c in clients))
    assert raw.count("ping") == 4
    assert pool.connections_opened(order=True) == raw.accepted == 4
    assert pool.connections_opened(order=False) == 0  # the pings went through the order lane
    await asyncio.gather(*(c.place_order(buy(), strategy="S1") for c in clients))
    assert raw.count("placeorder") == 4
    assert pool.connections_opened(order=True) == raw.accepted == 4


async def test_orders_of_accounts_at_once_without_a_warm_up_each_open_a_connection(
    raw: RawHttpServer, pool: HostPool
) -> None:
    # The other side of the test above: the same four orders on a cold pool pay four connects.
    clients = [keyed(raw.url, pool, n) for n in range(4)]
    await asyncio.gather(*(c.place_order(buy(), strategy="S1") for c in clients))
    assert pool.connections_opened(order=True) == raw.accepted == 4


async def test_a_failed_warm_up_ping_is_not_tried_again(raw: RawHttpServer, pool: HostPool) -> None:
    raw.then("ping", "close")
    with pytest.raises(ConnectionFailedError):
        await client(raw.url, pool).warm_order_lane()
    assert raw.count("ping") == 1
