"""OpenAlgoClient against a scripted fake OpenAlgo over real loopback HTTP.

The fake answers what the paper exchange cannot: HTML, garbage, dropped connections, exact request
counts (to prove order calls are never retried), a server echoing the API key. A counting TCP proxy
proves connection reuse. The paper exchange itself is exercised in test_broker_paper.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from aiohttp import web

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts, origin_of
from algomirror.broker.errors import (
    AuthError,
    BrokerTimeoutError,
    ConnectionFailedError,
    MalformedResponseError,
    RateLimitedError,
    RejectedError,
    ServerError,
    UnknownOutcomeError,
)
from algomirror.broker.facade import (
    COULD_NOT_CONNECT,
    INVALID_HOST_URL,
    KEY_REJECTED,
    NO_FUNDS,
    NOT_OPENALGO,
    TIMED_OUT,
    check_connection,
)
from algomirror.broker.ratelimit import RateLimits
from algomirror.broker.wire import Action, OrderRequest
from tests.broker_support import CountingProxy, LoopThread

T = TypeVar("T")
KEY = "test-key-0123456789abcdef"


@dataclass
class Reply:
    """What the fake does for one request: JSON, raw text, hang or drop."""

    code: int = 200
    body: Any = None
    text: str | None = None
    content_type: str = "application/json"
    hang: bool = False
    drop: bool = False
    headers: dict[str, str] | None = None


@dataclass
class FakeOpenAlgo:
    loops: LoopThread
    script: dict[str, list[Reply]] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    port: int = 0
    _release: asyncio.Event | None = None
    _runner: web.AppRunner | None = None

    def start(self) -> None:
        async def up() -> None:
            self._release = asyncio.Event()
            app = web.Application()
            app.router.add_post("/api/v1/{endpoint}", self._handle)
            self._runner = web.AppRunner(app, shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

        self.loops.call(up)

    def stop(self) -> None:
        async def down() -> None:
            assert self._release is not None and self._runner is not None
            self._release.set()
            await self._runner.cleanup()

        self.loops.call(down)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, endpoint: str, *replies: Reply) -> None:
        self.script.setdefault(endpoint, []).extend(replies)

    def count(self, endpoint: str) -> int:
        return sum(1 for name, _ in self.seen if name == endpoint)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.seen.append((endpoint, body))
        queue = self.script.get(endpoint) or []
        reply = queue.pop(0) if queue else Reply(body=self._default(endpoint, body))
        if reply.hang:
            assert self._release is not None
            await self._release.wait()
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=200)
        if reply.text is not None:
            response = web.Response(status=reply.code, text=reply.text, content_type=reply.content_type)
            response.headers.update(reply.headers or {})
            return response
        return web.json_response(reply.body, status=reply.code)

    @staticmethod
    def _default(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        if endpoint == "ping":
            return {"status": "success", "data": {"broker": "fakebroker", "message": "pong"}}
        if endpoint == "funds":
            return {"status": "success", "data": {"availablecash": "1234.50", "utiliseddebits": "0.00"}}
        if endpoint in ("placeorder", "cancelorder"):
            return {"status": "success", "orderid": body.get("orderid", "25112200000001")}
        return {"status": "success", "data": {}}


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@pytest.fixture
def fake(loops: LoopThread) -> Iterator[FakeOpenAlgo]:
    server = FakeOpenAlgo(loops)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def pool() -> AsyncIterator[HostPool]:
    async with HostPool() as shared:
        yield shared


FAST = Timeouts(connect=1.0, read=0.5, order=0.5)
NO_WAIT = RetryPolicy(attempts=3, base=0.001, cap=0.002)


def make_client(url: str, pool: HostPool, **kwargs: Any) -> OpenAlgoClient:
    kwargs.setdefault("timeouts", FAST)
    kwargs.setdefault("retry", NO_WAIT)
    return OpenAlgoClient(url, KEY, pool=pool, **kwargs)


def buy(qty: int = 1) -> OrderRequest:
    return OrderRequest(symbol="SBIN", exchange="NSE", action=Action.BUY, quantity=qty)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------- tests


async def test_read_when_server_errors_once_is_retried_and_succeeds(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("funds", Reply(code=500, body={"status": "error", "message": "broker down"}))
    funds = await make_client(fake.url, pool).funds()
    assert funds.availablecash == Decimal("1234.50")
    assert fake.count("funds") == 2


async def test_read_when_server_keeps_failing_raises_server_error_after_three_attempts(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("funds", *[Reply(code=503, text="down", content_type="text/plain")] * 3)
    with pytest.raises(ServerError):
        await make_client(fake.url, pool).funds()
    assert fake.count("funds") == 3


async def test_place_when_server_errors_raises_unknown_outcome_and_sends_once(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("placeorder", Reply(code=500, body={"status": "error", "message": "broker timeout"}))
    with pytest.raises(UnknownOutcomeError):
        await make_client(fake.url, pool).place_order(buy(), strategy="S1")
    assert fake.count("placeorder") == 1


async def test_place_when_reply_hangs_past_timeout_raises_unknown_outcome(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("placeorder", Reply(hang=True))
    with pytest.raises(UnknownOutcomeError):
        await make_client(fake.url, pool).place_order(buy(), strategy="S1")
    assert fake.count("placeorder") == 1


async def test_read_when_reply_hangs_past_timeout_raises_timeout(fake: FakeOpenAlgo, pool: HostPool) -> None:
    fake.then("orderbook", Reply(hang=True), Reply(hang=True))
    client = make_client(fake.url, pool, retry=RetryPolicy(attempts=2, base=0.001, cap=0.001))
    with pytest.raises(BrokerTimeoutError):
        await client.orderbook()
    assert fake.count("orderbook") == 2


async def test_place_when_connection_dropped_raises_unknown_outcome(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("placeorder", Reply(drop=True))
    with pytest.raises(UnknownOutcomeError):
        await make_client(fake.url, pool).place_order(buy(), strategy="S1")
    assert fake.count("placeorder") == 1


async def test_read_when_rate_limited_waits_about_a_second_then_succeeds(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("funds", Reply(code=429, body={"message": "10 per 1 second"}))
    loop = asyncio.get_running_loop()
    began = loop.time()
    funds = await make_client(fake.url, pool).funds()
    waited = loop.time() - began
    assert funds.availablecash is not None
    assert fake.count("funds") == 2
    assert 0.9 <= waited < 3.0


async def test_place_when_rate_limited_raises_retryable_without_retrying(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("placeorder", Reply(code=429, body={"message": "10 per 1 second"}))
    with pytest.raises(RateLimitedError) as info:
        await make_client(fake.url, pool).place_order(buy(), strategy="S1")
    assert info.value.retry_after == pytest.approx(1.0)
    assert fake.count("placeorder") == 1


async def test_call_when_key_rejected_halts_client_until_cleared(fake: FakeOpenAlgo, pool: HostPool) -> None:
    fake.then("funds", Reply(code=403, body={"status": "error", "message": "Invalid openalgo apikey"}))
    client = make_client(fake.url, pool)
    with pytest.raises(AuthError):
        await client.funds()
    with pytest.raises(AuthError):
        await client.ping()
    assert fake.count("funds") == 1
    assert fake.count("ping") == 0  # halted: no further calls reach the server
    assert client.halted is not None
    client.clear_halt()
    assert (await client.ping()).broker == "fakebroker"


async def test_read_when_server_answers_html_raises_malformed_after_retries(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    html = Reply(text="<html><body>Welcome to nginx</body></html>", content_type="text/html")
    fake.then("positionbook", html, html, html)
    with pytest.raises(MalformedResponseError):
        await make_client(fake.url, pool).positionbook()
    assert fake.count("positionbook") == 3


async def test_place_when_server_answers_garbage_raises_unknown_outcome(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("placeorder", Reply(text="}{ not json", content_type="text/plain"))
    with pytest.raises(UnknownOutcomeError):
        await make_client(fake.url, pool).place_order(buy(), strategy="S1")
    assert fake.count("placeorder") == 1


def undecodable() -> Reply:
    """A reply whose body claims gzip but is not: the transport fails reading it, after the server acted."""
    return Reply(text='{"status": "success"}', headers={"Content-Encoding": "gzip"})


async def test_place_when_reply_body_cannot_be_decoded_raises_unknown_outcome_and_sends_once(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("placeorder", undecodable())
    with pytest.raises(UnknownOutcomeError):
        await make_client(fake.url, pool).place_order(buy(), strategy="S1")
    assert fake.count("placeorder") == 1


async def test_read_when_reply_body_cannot_be_decoded_raises_malformed_after_retries(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("positionbook", undecodable(), undecodable(), undecodable())
    with pytest.raises(MalformedResponseError):
        await make_client(fake.url, pool).positionbook()
    assert fake.count("positionbook") == 3


async def test_read_when_success_has_wrong_shape_raises_malformed(fake: FakeOpenAlgo, pool: HostPool) -> None:
    fake.then("orderbook", *[Reply(body={"status": "success", "data": "oops"})] * 3)
    with pytest.raises(MalformedResponseError):
        await make_client(fake.url, pool).orderbook()


async def test_split_when_success_reply_is_unreadable_raises_unknown_outcome(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    fake.then("splitorder", Reply(body={"status": "success", "results": "see logs"}))
    with pytest.raises(UnknownOutcomeError):
        await make_client(fake.url, pool).split_order(buy(10), splitsize=5, strategy="S1")
    assert fake.count("splitorder") == 1


async def test_modify_when_reply_omits_orderid_acknowledges_the_sent_id(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    from algomirror.broker.wire import ModifyRequest, PriceType, Product

    fake.then("modifyorder", Reply(body={"status": "success", "message": "Order modified successfully"}))
    request = ModifyRequest("42", "SBIN", "NSE", Action.BUY, 1, PriceType.LIMIT, Product.CNC, Decimal("10"))
    ack = await make_client(fake.url, pool).modify_order(request, strategy="S1")
    assert ack.orderid == "42"
    assert fake.seen[-1][1]["price"] == "10"


async def test_place_when_semi_auto_queues_raises_not_placed(fake: FakeOpenAlgo, pool: HostPool) -> None:
    from algomirror.broker.errors import NotPlacedError

    body = {
        "status": "success",
        "message": "Order queued for approval in Action Center",
        "mode": "semi_auto",
        "pending_order_id": 12,
    }
    fake.then("placeorder", Reply(body=body))
    with pytest.raises(NotPlacedError):
        await make_client(fake.url, pool).place_order(buy(), strategy="S1")


async def test_calls_when_host_unreachable_raise_connection_failed(pool: HostPool) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = make_client(url, pool)
    with pytest.raises(ConnectionFailedError):
        await client.funds()
    with pytest.raises(ConnectionFailedError):  # nothing was sent: retryable even for an order
        await client.place_order(buy(), strategy="S1")


async def test_place_when_sent_passes_strategy_and_key_in_body(fake: FakeOpenAlgo, pool: HostPool) -> None:
    ack = await make_client(fake.url, pool).place_order(buy(75), strategy="AM-12")
    assert ack.orderid == "25112200000001"
    endpoint, body = fake.seen[-1]
    assert endpoint == "placeorder"
    assert body["strategy"] == "AM-12"
    assert body["apikey"] == KEY
    assert body["quantity"] == "75"


async def test_history_when_requested_sends_iso_dates_and_reads_epoch_bars(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    from datetime import UTC, date, datetime

    bars = [{"timestamp": 1763782500, "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 10, "oi": 0}]
    fake.then("history", Reply(body={"status": "success", "data": bars}))
    (bar,) = await make_client(fake.url, pool).history(
        "NIFTY", "NSE_INDEX", "5m", date(2025, 11, 20), date(2025, 11, 22)
    )
    _, body = fake.seen[-1]
    assert (body["start_date"], body["end_date"], body["interval"]) == ("2025-11-20", "2025-11-22", "5m")
    assert bar.start == datetime(2025, 11, 22, 3, 35, tzinfo=UTC)


async def test_errors_and_logs_when_server_echoes_key_never_show_it(
    fake: FakeOpenAlgo, pool: HostPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"status": "error", "message": f"Unknown key {KEY}"}
    fake.then("funds", Reply(code=500, body=echo), Reply(code=500, body=echo), Reply(code=500, body=echo))
    fake.then("placeorder", Reply(code=400, body=echo))
    client = make_client(fake.url, pool)
    with pytest.raises(ServerError) as read_err:
        await client.funds()
    with pytest.raises(RejectedError) as order_err:
        await client.place_order(buy(), strategy="S1")
    for exc in (read_err.value, order_err.value):
        assert KEY not in str(exc)
        assert KEY not in repr(exc)
    assert KEY not in caplog.text
    assert KEY not in repr(client)
    assert "Unknown key ***" in str(order_err.value)


async def test_hundred_sequential_calls_when_pooled_open_one_connection(
    fake: FakeOpenAlgo, loops: LoopThread, pool: HostPool
) -> None:
    proxy = CountingProxy(loops, fake.port)
    proxy.start()
    try:
        # Generous timeouts: a call timed out under a loaded machine is retried on a new connection,
        # which is not what this test is about (a CI run saw 2 connections that way).
        patient = Timeouts(connect=5.0, read=10.0, order=10.0)
        first = make_client(proxy.url, pool, limits=RateLimits.unlimited(), timeouts=patient)
        second = make_client(proxy.url + "/", pool, limits=RateLimits.unlimited(), timeouts=patient)
        for i in range(100):
            await (first if i % 2 else second).ping()
        assert fake.count("ping") == 100
        assert proxy.accepted == 1
        assert pool.hosts == (origin_of(proxy.url),)
    finally:
        proxy.stop()


async def test_concurrent_calls_when_pooled_stay_within_pool_size(
    fake: FakeOpenAlgo, loops: LoopThread
) -> None:
    proxy = CountingProxy(loops, fake.port)
    proxy.start()
    try:
        async with HostPool(max_connections=8) as small:
            # Generous timeouts: 100 calls queue for 8 connections on a busy CI machine.
            patient = Timeouts(connect=5.0, read=10.0, order=10.0)
            client = make_client(proxy.url, small, limits=RateLimits.unlimited(), timeouts=patient)
            await asyncio.gather(*(client.ping() for _ in range(100)))
        assert fake.count("ping") == 100
        assert 1 <= proxy.accepted <= 8
    finally:
        proxy.stop()


# ------------------------------------------------------------------------------ sync facade / test


def test_check_connection_when_server_healthy_reports_connected(fake: FakeOpenAlgo) -> None:
    result = check_connection(fake.url, KEY, timeout=2.0)
    assert result.ok
    assert result.status == "connected"
    assert result.broker == "fakebroker"
    assert result.available_cash == Decimal("1234.50")


def test_check_connection_when_key_rejected_reports_auth_failed(fake: FakeOpenAlgo) -> None:
    fake.then("ping", Reply(code=403, body={"status": "error", "message": "Invalid openalgo apikey"}))
    result = check_connection(fake.url, KEY, timeout=2.0)
    assert not result.ok
    assert result.status == "auth_failed"
    assert result.message == KEY_REJECTED  # a fixed text: the server's words are not repeated


def test_check_connection_when_funds_errors_reports_failed_with_broker(fake: FakeOpenAlgo) -> None:
    fake.then("funds", Reply(code=500, body={"status": "error", "message": "Broker session expired"}))
    result = check_connection(fake.url, KEY, timeout=2.0)
    assert result.status == "failed"
    assert result.broker == "fakebroker"
    assert result.message == NO_FUNDS and "expired" not in result.message


def test_check_connection_when_html_reports_not_openalgo(fake: FakeOpenAlgo) -> None:
    fake.then("ping", Reply(text="<html>captive portal</html>", content_type="text/html"))
    result = check_connection(fake.url, KEY, timeout=2.0)
    assert (result.status, result.message, result.broker) == ("failed", NOT_OPENALGO, None)


@pytest.mark.parametrize(
    "reply",
    [
        # Another JSON service: its message must not be shown.
        Reply(code=200, body={"status": "success", "message": "internal admin console v2"}),
        Reply(code=200, body={"status": "success", "data": {"message": "pong"}}),
        Reply(code=200, body={"status": "success", "data": {"broker": "x y <b>", "message": "pong"}}),
        Reply(code=200, body={"status": "success", "data": {"broker": "zerodha"}}),
        Reply(code=200, body=["status", "success"]),
        Reply(code=404, body={"status": "error", "message": "secret path /internal/backup"}),
        Reply(code=403, body={"detail": "forbidden by internal proxy"}),
        Reply(code=500, body={"status": "error", "message": "db password wrong"}),
    ],
)
def test_check_connection_when_reply_lacks_ping_shape_says_not_openalgo_without_echo(
    fake: FakeOpenAlgo, reply: Reply
) -> None:
    fake.then("ping", reply)
    result = check_connection(fake.url, KEY, timeout=2.0)
    assert (result.ok, result.status, result.message, result.broker) == (False, "failed", NOT_OPENALGO, None)
    assert fake.count("funds") == 0  # nothing more is sent to a server that is not OpenAlgo


def test_check_connection_when_slow_server_reports_timed_out_within_budget(fake: FakeOpenAlgo) -> None:
    fake.then("ping", Reply(hang=True))
    started = time.monotonic()
    result = check_connection(fake.url, KEY, timeout=0.3)
    assert (result.status, result.message) == ("error", TIMED_OUT)
    assert time.monotonic() - started < 3.0


def test_check_connection_when_unreachable_or_bad_url_reports_fixed_texts() -> None:
    closed = check_connection(f"http://127.0.0.1:{free_port()}", KEY, timeout=1.0)
    assert (closed.status, closed.message) == ("error", COULD_NOT_CONNECT)
    bad = check_connection("not a url", KEY, timeout=1.0)
    assert (bad.status, bad.message) == ("failed", INVALID_HOST_URL)


# ------------------------------------------------------------- real OpenAlgo replies (issue 8 item 11)


async def test_smart_order_when_server_finds_no_open_position_returns_noop_not_not_placed(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    real = {
        "status": "success",
        "mode": "analyze",
        "message": "No OpenPosition Found. Not placing Exit order.",
    }
    fake.then("placesmartorder", Reply(body=real))
    flat = OrderRequest(symbol="SBIN", exchange="NSE", action=Action.SELL, quantity=0)
    result = await make_client(fake.url, pool).place_smart_order(flat, position_size=0, strategy="S1")
    assert result.noop
    assert result.orderid is None
    assert fake.count("placesmartorder") == 1


async def test_positionbook_when_server_reports_closed_row_reads_realised_and_zero_unrealised(
    fake: FakeOpenAlgo, pool: HostPool
) -> None:
    closed = {"symbol": "NIFTY30DEC2526000CE", "exchange": "NFO", "product": "NRML", "quantity": 0,
              "average_price": 0.0, "ltp": 112.45, "pnl": 862.5, "pnlpercent": 0.0, "unrealized_pnl": 862.5,
              "today_realized_pnl": 0.0}  # fmt: skip
    fake.then("positionbook", Reply(body={"status": "success", "mode": "analyze", "data": [closed]}))
    (row,) = (await make_client(fake.url, pool).positionbook()).positions
    assert (row.quantity, row.today_realized_pnl, row.unrealized_pnl) == (0, Decimal("862.50"), Decimal(0))
