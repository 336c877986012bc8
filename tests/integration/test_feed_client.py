"""FeedConnection against the paper exchange's WebSocket server over loopback (both profiles), plus the
frame parser on the shapes a real OpenAlgo server sends (OPENALGO-PROTOCOL.md §5.3, §8)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from algomirror.broker.feed_client import (
    FeedAuthError,
    FeedClosed,
    FeedConnection,
    Tick,
    open_feed,
    parse_tick,
)
from tests.helpers import eventually_async
from tests.sim_fixtures import SimHandle, on_both_profiles

NIFTY = ("NIFTY", "NSE_INDEX")
BANKNIFTY = ("BANKNIFTY", "NSE_INDEX")
DEADLINE = 5.0


@pytest.fixture
async def feed(simulator_session: SimHandle) -> AsyncIterator[FeedConnection]:
    conn = await open_feed(simulator_session.ws_url, simulator_session.api_keys[0], timeout=DEADLINE)
    try:
        yield conn
    finally:
        await conn.close()


async def next_tick(conn: FeedConnection, timeout: float = DEADLINE) -> Tick:
    """The next tick, failing the test when none arrives within ``timeout`` seconds."""
    return await asyncio.wait_for(anext(aiter(conn.ticks())), timeout)


async def advance(sim: SimHandle, seconds: float) -> datetime:
    # The control client is synchronous; keep the event loop free to read the socket meanwhile.
    return await asyncio.to_thread(sim.control.advance, seconds)


@on_both_profiles
async def test_open_feed_when_key_valid_authenticates(simulator_session: SimHandle) -> None:
    conn = await open_feed(simulator_session.ws_url, simulator_session.api_keys[0], timeout=DEADLINE)
    try:
        assert not conn.closed
        assert conn.last_message_at is not None  # the auth reply
        assert conn.last_message_at.tzinfo is UTC
    finally:
        await conn.close()
    assert conn.closed
    with pytest.raises(FeedClosed):
        await next_tick(conn)


async def test_open_feed_when_key_invalid_raises_auth_error(simulator_session: SimHandle) -> None:
    with pytest.raises(FeedAuthError, match="Invalid API key"):
        await open_feed(simulator_session.ws_url, "not-a-key", timeout=DEADLINE)


async def test_open_feed_when_nothing_listens_raises_closed(unused_tcp_port: int) -> None:
    with pytest.raises(FeedClosed, match="cannot connect"):
        await open_feed(f"ws://127.0.0.1:{unused_tcp_port}", "k", timeout=DEADLINE)


async def test_open_feed_when_auth_reply_missing_raises_closed(simulator_session: SimHandle) -> None:
    await asyncio.to_thread(simulator_session.control.ws_no_auth_reply, 1)
    started = time.monotonic()
    with pytest.raises(FeedClosed, match="no authentication reply"):
        await open_feed(simulator_session.ws_url, simulator_session.api_keys[0], timeout=0.5)
    assert time.monotonic() - started < DEADLINE


@on_both_profiles
async def test_subscribe_when_clock_advances_ticks_arrive(
    simulator_session: SimHandle, feed: FeedConnection
) -> None:
    result = await feed.subscribe([NIFTY, ("NOSUCH", "NFO")], mode=2)
    assert result[NIFTY] is None
    assert "NOSUCH" in (result[("NOSUCH", "NFO")] or "")
    now = await advance(simulator_session, 2)
    # Skip a snapshot (the paper exchange sends one; a real server does not) until a fresh tick.
    tick = await next_tick(feed)
    while tick.at < now:
        tick = await next_tick(feed)
    assert (tick.symbol, tick.exchange) == NIFTY
    assert tick.mode == 2
    assert tick.ltp > 0
    assert tick.at.tzinfo is not None and tick.received_at.tzinfo is not None
    assert tick.volume is not None
    assert feed.malformed == 0


async def test_subscribe_returns_on_ack_without_waiting_for_a_tick(
    simulator_session: SimHandle, feed: FeedConnection
) -> None:
    # Silent: no snapshot and no ticks at all, like a real server between broker ticks.
    await asyncio.to_thread(simulator_session.control.ws_silent, True)
    started = time.monotonic()
    assert await feed.subscribe([NIFTY], mode=1) == {NIFTY: None}
    assert time.monotonic() - started < 1.0
    with pytest.raises(TimeoutError):
        await next_tick(feed, timeout=0.2)


async def test_subscribe_when_mode_invalid_maps_every_pair_to_the_error_frame(
    feed: FeedConnection,
) -> None:
    # The server answers with a typeless error frame carrying no request_id.
    result = await feed.subscribe([NIFTY, BANKNIFTY], mode=9)
    assert set(result) == {NIFTY, BANKNIFTY}
    assert all("Invalid mode" in (text or "") for text in result.values())
    assert feed.server_errors == 0  # it answered the request; not an unsolicited error
    assert await feed.subscribe([NIFTY], mode=1) == {NIFTY: None}  # the socket stays usable


async def test_unsubscribe_when_acked_stops_that_symbols_ticks(
    simulator_session: SimHandle, feed: FeedConnection
) -> None:
    assert await feed.subscribe([NIFTY, BANKNIFTY], mode=1) == {NIFTY: None, BANKNIFTY: None}
    before = await advance(simulator_session, 1)
    await feed.unsubscribe([BANKNIFTY], mode=1)
    target = await advance(simulator_session, 3)
    seen: list[Tick] = []
    deadline = time.monotonic() + DEADLINE
    # Read until NIFTY's tick of the last step: every BANKNIFTY tick sent after the ack is behind it.
    while not any(t.symbol == "NIFTY" and t.at >= target for t in seen):
        assert time.monotonic() < deadline, "no NIFTY tick of the last step"
        seen.append(await next_tick(feed))
    assert any(t.symbol == "BANKNIFTY" for t in seen), "BANKNIFTY ticked before the unsubscribe"
    assert [t for t in seen if t.symbol == "BANKNIFTY" and t.at > before] == []


@on_both_profiles
async def test_ticks_when_server_drops_socket_raise_closed(
    simulator_session: SimHandle, feed: FeedConnection
) -> None:
    await feed.subscribe([NIFTY], mode=1)
    assert await asyncio.to_thread(simulator_session.control.ws_drop) >= 1

    async def drain() -> None:
        async for _ in feed.ticks():
            pass

    with pytest.raises(FeedClosed, match="1012"):
        await asyncio.wait_for(drain(), DEADLINE)
    assert feed.closed
    with pytest.raises(FeedClosed):
        await feed.subscribe([NIFTY], mode=1)


async def test_order_update_frames_when_order_placed_reach_callback_only(
    simulator_session: SimHandle,
) -> None:
    hints: list[dict[str, object]] = []
    conn = await open_feed(
        simulator_session.ws_url,
        simulator_session.api_keys[0],
        timeout=DEADLINE,
        on_order_update=lambda frame: hints.append(dict(frame)),
    )
    try:
        await conn.subscribe_orders()
        # Its ack proves subscribe_orders was processed (frames are handled in order); an unknown
        # symbol gets no snapshot, so the tick stream stays empty.
        assert (await conn.subscribe([("NOSUCH", "NFO")], mode=1))[("NOSUCH", "NFO")] is not None
        async with httpx.AsyncClient(base_url=simulator_session.api_url, timeout=DEADLINE) as http:
            reply = await http.post(
                "/placeorder",
                json={
                    "apikey": simulator_session.api_keys[0],
                    "strategy": "feed",
                    "symbol": "NIFTY01DEC2626000CE",
                    "exchange": "NFO",
                    "action": "BUY",
                    "quantity": 65,
                    "pricetype": "MARKET",
                    "product": "NRML",
                },
            )
        assert reply.status_code == 200, reply.text
        orderid = reply.json()["orderid"]

        async def hinted() -> bool:
            return conn.order_updates > 0

        await eventually_async(hinted, timeout=DEADLINE, what="an order_update frame")
        assert hints[0]["type"] == "order_update" and hints[0]["orderid"] == orderid
        # A hint is never a tick: nothing reaches the tick stream from order frames.
        with pytest.raises(TimeoutError):
            await next_tick(conn, timeout=0.2)
    finally:
        await conn.close()


# -- a scripted server: what the paper exchange does not do ------------------------------------------


@pytest.fixture
async def scripted_server() -> AsyncIterator[tuple[str, list[dict[str, object]]]]:
    """A WS server that authenticates any key, answers nothing else, and sends an unsolicited typeless
    error after the auth reply, and after a ``subscribe`` a garbage frame and one real-server-shaped tick
    (no snapshot, no ack)."""
    received: list[dict[str, object]] = []

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            received.append(msg)
            if msg.get("action") == "authenticate":
                await ws.send(json.dumps({"type": "auth", "status": "success", "broker": "zerodha"}))
                # No request is pending yet: this error answers nothing.
                await ws.send(json.dumps({"status": "error", "code": "BROKER_ERROR", "message": "upstream"}))
            elif msg.get("action") == "subscribe":
                await ws.send("<html>not json")
                data = {"symbol": "NIFTY", "exchange": "NSE_INDEX", "mode": 2, "ltp": "26001.5"}
                await ws.send(
                    json.dumps(
                        {
                            "type": "market_data",
                            "symbol": "NIFTY",
                            "exchange": "NSE_INDEX",
                            "mode": 1,
                            "data": data,
                        }
                    )
                )

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}", received


async def test_subscribe_when_server_never_acks_raises_closed_and_ends_ticks(
    scripted_server: tuple[str, list[dict[str, object]]],
) -> None:
    url, received = scripted_server
    conn = await open_feed(url, "k", timeout=0.5)

    async def unsolicited_error_seen() -> bool:
        return conn.server_errors == 1

    await eventually_async(unsolicited_error_seen, timeout=DEADLINE, what="the unsolicited error frame")
    assert "BROKER_ERROR" in (conn.last_server_error or "")
    with pytest.raises(FeedClosed, match="no subscribe ack"):
        await conn.subscribe([NIFTY], mode=1)
    assert conn.closed
    # What arrived before the close is still delivered, then the stream ends.
    tick = await next_tick(conn)
    assert (tick.symbol, tick.mode, tick.ltp, tick.at) == ("NIFTY", 1, Decimal("26001.5"), tick.received_at)
    assert conn.malformed == 1
    assert conn.server_errors == 1
    with pytest.raises(FeedClosed):
        await next_tick(conn)
    sent = [m for m in received if m.get("action") == "subscribe"]
    assert sent == [
        {
            "action": "subscribe",
            "symbols": [{"symbol": "NIFTY", "exchange": "NSE_INDEX"}],
            "mode": 1,
            "request_id": sent[0]["request_id"],
        }
    ]


# -- parser: shapes of both servers -----------------------------------------------------------------

RECEIVED = datetime(2026, 11, 25, 5, 0, 1, tzinfo=UTC)


def test_parse_tick_when_real_server_shape_ignores_inner_mode_and_unknown_keys() -> None:
    frame = {
        "type": "market_data",
        "symbol": "NIFTY25NOV2526000CE",
        "exchange": "NFO",
        "mode": 1,  # this client subscribed at LTP; the frame is a relabelled Depth tick
        "broker": "zerodha",
        "data": {
            "symbol": "NIFTY25NOV2526000CE",
            "exchange": "NFO",
            "mode": 3,
            "ltp": 112.45,
            "timestamp": 1763782500123,
            "oi": 2104500,
            "surprise": {"x": 1},
            "depth": {
                "buy": [{"price": 112.4, "quantity": 975, "orders": 6}],
                "sell": [{"price": 112.5, "quantity": 450, "orders": 3}],
            },
        },
    }
    tick = parse_tick(frame, RECEIVED)
    assert tick == Tick(
        symbol="NIFTY25NOV2526000CE",
        exchange="NFO",
        ltp=Decimal("112.45"),
        at=datetime(2025, 11, 22, 3, 35, 0, 123000, tzinfo=UTC),
        mode=1,
        bid=Decimal("112.4"),
        ask=Decimal("112.5"),
        bid_qty=975,
        ask_qty=450,
        volume=None,
        oi=2104500,
        received_at=RECEIVED,
    )


def test_parse_tick_when_numbers_are_strings_reads_them() -> None:
    frame = {
        "type": "market_data",
        "mode": "2",
        "data": {
            "symbol": "NIFTY",
            "exchange": "NSE_INDEX",
            "ltp": "26010.05",
            "timestamp": "1763782500000",
            "volume": "1200.0",
            "oi": "n/a",
        },
    }
    tick = parse_tick(frame, RECEIVED)
    assert tick is not None
    assert (tick.symbol, tick.mode, tick.ltp, tick.volume, tick.oi) == (
        "NIFTY",
        2,
        Decimal("26010.05"),
        1200,
        None,
    )
    assert tick.at == datetime(2025, 11, 22, 3, 35, tzinfo=UTC)


def test_parse_tick_when_zero_price_or_no_timestamp_passes_through() -> None:
    frame = {"type": "market_data", "symbol": "X", "exchange": "NFO", "mode": 1, "data": {"ltp": 0}}
    tick = parse_tick(frame, RECEIVED)
    assert tick is not None and tick.ltp == 0 and tick.at == RECEIVED


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "market_data", "symbol": "X", "exchange": "NFO", "mode": 1, "data": {}},
        {"type": "market_data", "symbol": "X", "exchange": "NFO", "mode": 9, "data": {"ltp": 1}},
        {"type": "market_data", "symbol": "X", "exchange": "NFO", "data": {"ltp": 1, "mode": 1}},
        {"type": "market_data", "exchange": "NFO", "mode": 1, "data": {"ltp": 1}},
        {"type": "market_data", "symbol": "X", "exchange": "NFO", "mode": 1, "data": {"ltp": "NaN"}},
        {"type": "market_data", "symbol": "X", "exchange": "NFO", "mode": 1, "data": [1]},
    ],
)
def test_parse_tick_when_required_field_unreadable_returns_none(frame: dict[str, object]) -> None:
    assert parse_tick(frame, RECEIVED) is None
