"""OpenAlgoClient against the paper exchange over real loopback HTTP: every endpoint, every error class
via the simulator's fault injection, rate pacing, connection reuse and the connection test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date
from decimal import Decimal

import pytest

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.errors import (
    AuthError,
    BrokerTimeoutError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    ServerError,
    UnknownOutcomeError,
)
from algomirror.broker.facade import check_connection
from algomirror.broker.ratelimit import RateLimits
from algomirror.broker.wire import (
    Action,
    MarginPosition,
    ModifyRequest,
    OptionLeg,
    OrderRequest,
    OrderState,
    PriceType,
    Product,
    SymbolInfo,
)
from tests.broker_support import CountingProxy, LoopThread
from tests.helpers import eventually_async
from tests.sim_fixtures import SimHandle

TAG = "AM-test-1"
QUICK_RETRY = RetryPolicy(attempts=3, base=0.001, cap=0.005)


@pytest.fixture
async def pool() -> AsyncIterator[HostPool]:
    async with HostPool() as shared:
        yield shared


def client_for(sim: SimHandle, pool: HostPool, index: int = 0, **kwargs: object) -> OpenAlgoClient:
    kwargs.setdefault("retry", QUICK_RETRY)
    return OpenAlgoClient(sim.rest_url, sim.api_keys[index], pool=pool, **kwargs)  # type: ignore[arg-type]


async def nifty_future(client: OpenAlgoClient) -> SymbolInfo:
    (first, *_) = await client.expiry("NIFTY", "NFO", "futures")
    rows = await client.search(f"NIFTY{first.strftime('%d%b%y').upper()}FUT", "NFO")
    futures = [row for row in rows if row.instrumenttype == "FUT" and row.name == "NIFTY"]
    assert futures, rows
    return futures[0]


def market(info: SymbolInfo, action: Action, lots: int = 1, product: Product = Product.NRML) -> OrderRequest:
    assert info.lotsize is not None
    return OrderRequest(
        symbol=info.symbol,
        exchange=info.exchange,
        action=action,
        quantity=lots * info.lotsize,
        product=product,
    )


# ------------------------------------------------------------------------------------ reads


async def test_account_reads_when_account_is_fresh_parse_typed_values(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    assert (await client.ping()).broker == "sandbox"
    funds = await client.funds()
    assert funds.availablecash == Decimal("10000000.00")
    assert funds.utiliseddebits == Decimal("0.00")
    assert (await client.orderbook()).orders == ()
    assert await client.tradebook() == ()
    assert (await client.positionbook()).positions == ()
    assert (await client.holdings()).holdings == ()


async def test_market_data_when_nifty_queried_returns_typed_values(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    spot = await client.quotes("NIFTY", "NSE_INDEX")
    assert spot.ltp is not None and spot.ltp > 0

    future = await nifty_future(client)
    info = await client.symbol(future.symbol, "NFO")
    assert info.lotsize is not None and info.lotsize > 0
    assert info.expiry is not None and info.expiry >= date(2026, 11, 25)

    items = await client.multiquotes([("NIFTY", "NSE_INDEX"), ("NOSUCH", "NSE")])
    by_symbol = {item.symbol: item for item in items}
    assert by_symbol["NIFTY"].quote is not None
    assert by_symbol["NOSUCH"].quote is None and by_symbol["NOSUCH"].error

    depth = await client.depth(future.symbol, "NFO")
    assert len(depth.bids) == 5 and len(depth.asks) == 5

    bars = await client.history("NIFTY", "NSE_INDEX", "5m", date(2026, 11, 23), date(2026, 11, 25))
    assert bars
    assert all(bar.start.tzinfo is UTC for bar in bars)
    assert [bar.start for bar in bars] == sorted(bar.start for bar in bars)

    assert "5m" in (await client.intervals()).all

    expiries = await client.expiry("NIFTY", "NFO", "options")
    assert list(expiries) == sorted(expiries)
    osym = await client.option_symbol(
        underlying="NIFTY", exchange="NSE_INDEX", expiry_date=expiries[0], offset="ATM", option_type="CE"
    )
    assert osym.symbol.endswith("CE") and osym.lotsize
    chain = await client.option_chain(
        underlying="NIFTY", exchange="NSE_INDEX", expiry_date=expiries[0], strike_count=2
    )
    assert chain.expiry_date == expiries[0]
    assert any(row.ce is not None and row.ce.label == "ATM" for row in chain.chain)

    margin = await client.margin(
        [MarginPosition(future.symbol, "NFO", Action.BUY, future.lotsize or 1, Product.NRML)]
    )
    assert margin.total_margin_required is not None and margin.total_margin_required > 0


async def test_reads_when_symbol_unknown_raise_rejected_or_not_found(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    with pytest.raises(RejectedError, match="Symbol 'NOSUCH' not found"):
        await client.quotes("NOSUCH", "NSE")
    with pytest.raises(NotFoundError):
        await client.symbol("NOSUCH", "NFO")
    with pytest.raises(NotFoundError, match="Order 123 not found"):
        await client.order_status("123", strategy=TAG)


# ----------------------------------------------------------------------------------- orders


async def test_market_order_when_filled_shows_in_every_book(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    future = await nifty_future(client)
    ack = await client.place_order(market(future, Action.BUY), strategy=TAG)
    assert isinstance(ack.orderid, str) and len(ack.orderid) == 14

    status = await client.order_status(ack.orderid, strategy=TAG)
    assert status.status is OrderState.COMPLETE
    assert status.average_price is not None and status.average_price > 0
    assert status.filled_quantity == future.lotsize

    book = await client.orderbook()
    (row,) = [o for o in book.orders if o.orderid == ack.orderid]
    assert row.strategy == TAG
    assert row.placed_at is not None

    trades = await client.tradebook()
    assert [t.quantity for t in trades if t.orderid == ack.orderid] == [future.lotsize]

    positions = (await client.positionbook()).positions
    (pos,) = [p for p in positions if p.symbol == future.symbol]
    assert pos.quantity == future.lotsize
    assert await client.open_position(strategy=TAG, symbol=future.symbol, exchange="NFO", product="NRML") == (
        future.lotsize
    )
    funds = await client.funds()
    assert funds.utiliseddebits is not None and funds.utiliseddebits > 0

    closed = await client.close_all_positions(strategy=TAG)
    assert closed.closed_positions == 1
    assert await client.open_position(strategy=TAG, symbol=future.symbol, exchange="NFO", product="NRML") == 0


async def test_limit_order_when_modified_then_cancelled_follows_states(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    future = await nifty_future(client)
    quote = await client.quotes(future.symbol, "NFO")
    assert quote.ltp is not None and future.lotsize is not None
    far = (quote.ltp * Decimal("0.8")).quantize(Decimal("1"))
    order = OrderRequest(future.symbol, "NFO", Action.BUY, future.lotsize, PriceType.LIMIT, Product.NRML, far)
    ack = await client.place_order(order, strategy=TAG)
    assert (await client.order_status(ack.orderid, strategy=TAG)).status is OrderState.OPEN

    modified = await client.modify_order(
        ModifyRequest(
            ack.orderid,
            future.symbol,
            "NFO",
            Action.BUY,
            future.lotsize,
            PriceType.LIMIT,
            Product.NRML,
            far - 5,
        ),
        strategy=TAG,
    )
    assert modified.orderid == ack.orderid
    assert (await client.order_status(ack.orderid, strategy=TAG)).price == far - 5

    cancelled = await client.cancel_order(ack.orderid, strategy=TAG)
    assert cancelled.orderid == ack.orderid
    assert (await client.order_status(ack.orderid, strategy=TAG)).status is OrderState.CANCELLED
    with pytest.raises(RejectedError, match="Cannot cancel order"):
        await client.cancel_order(ack.orderid, strategy=TAG)
    with pytest.raises(NotFoundError):
        await client.cancel_order("26112500000000", strategy=TAG)


async def test_cancel_all_when_orders_rest_cancels_them(simulator_session: SimHandle, pool: HostPool) -> None:
    client = client_for(simulator_session, pool)
    future = await nifty_future(client)
    quote = await client.quotes(future.symbol, "NFO")
    assert quote.ltp is not None and future.lotsize is not None
    low = (quote.ltp * Decimal("0.7")).quantize(Decimal("1"))
    ids = []
    for _ in range(2):
        order = OrderRequest(
            future.symbol, "NFO", Action.BUY, future.lotsize, PriceType.LIMIT, Product.NRML, low
        )
        ids.append((await client.place_order(order, strategy=TAG)).orderid)
    result = await client.cancel_all_orders(strategy=TAG)
    assert sorted(result.canceled_orders) == sorted(ids)
    assert all(o.status is OrderState.CANCELLED for o in (await client.orderbook()).orders)


async def test_smart_order_when_target_reached_then_repeated_is_noop(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    future = await nifty_future(client)
    assert future.lotsize is not None
    order = OrderRequest(future.symbol, "NFO", Action.BUY, 0, product=Product.NRML)
    first = await client.place_smart_order(order, position_size=2 * future.lotsize, strategy=TAG)
    assert first.orderid is not None and not first.noop
    again = await client.place_smart_order(order, position_size=2 * future.lotsize, strategy=TAG)
    assert again.noop
    assert await client.open_position(strategy=TAG, symbol=future.symbol, exchange="NFO", product="NRML") == (
        2 * future.lotsize
    )


async def test_split_and_basket_when_placed_report_every_child(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    future = await nifty_future(client)
    lot = future.lotsize
    assert lot is not None
    split = await client.split_order(market(future, Action.BUY, lots=3), splitsize=lot, strategy=TAG)
    assert len(split.items) == 3 and split.all_placed
    assert len({item.orderid for item in split.items}) == 3

    basket = await client.basket_order(
        [market(future, Action.SELL, lots=1), OrderRequest("NOSUCH", "NFO", Action.BUY, lot)], strategy=TAG
    )
    assert len(basket.items) == 2
    (failed,) = basket.failed
    assert failed.symbol == "NOSUCH" and "not found" in failed.message
    (placed,) = basket.placed
    assert placed.symbol == future.symbol


async def test_options_orders_when_resolved_by_offset_place_legs(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    expiry = (await client.expiry("NIFTY", "NFO", "options"))[0]
    osym = await client.option_symbol(
        underlying="NIFTY", exchange="NSE_INDEX", expiry_date=expiry, offset="ATM", option_type="CE"
    )
    lot = osym.lotsize
    assert lot is not None
    single = await client.options_order(
        strategy=TAG,
        underlying="NIFTY",
        exchange="NSE_INDEX",
        expiry_date=expiry,
        leg=OptionLeg("ATM", "CE", Action.BUY, lot, product=Product.NRML),
    )
    assert single.orderid is not None and single.symbol == osym.symbol
    multi = await client.options_multi_order(
        strategy=TAG,
        underlying="NIFTY",
        exchange="NSE_INDEX",
        expiry_date=expiry,
        legs=[
            OptionLeg("OTM2", "CE", Action.SELL, lot, product=Product.NRML),
            OptionLeg("OTM4", "CE", Action.BUY, lot, product=Product.NRML),
        ],
    )
    assert multi.legs.all_placed and len(multi.legs.items) == 2


async def test_place_when_exchange_rejects_raises_rejected_with_verbatim_text(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    future = await nifty_future(client)
    simulator_session.control.reject_next(1, "RMS: margin exceeds limit")
    with pytest.raises(RejectedError) as info:
        await client.place_order(market(future, Action.BUY), strategy=TAG)
    assert "RMS: margin exceeds limit" in info.value.message


# ------------------------------------------------------------------------------------ faults


async def test_read_when_server_errors_once_is_retried(simulator_session: SimHandle, pool: HostPool) -> None:
    simulator_session.control.status_next(500, endpoint="funds")
    funds = await client_for(simulator_session, pool).funds()
    assert funds.availablecash is not None


async def test_read_when_server_errors_three_times_raises_server_error(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    simulator_session.control.status_next(503, count=3, endpoint="orderbook")
    with pytest.raises(ServerError):
        await client_for(simulator_session, pool).orderbook()


async def test_place_when_server_errors_raises_unknown_outcome(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    future = await nifty_future(client)
    simulator_session.control.status_next(500, endpoint="placeorder")
    with pytest.raises(UnknownOutcomeError):
        await client.place_order(market(future, Action.BUY), strategy=TAG)


async def test_call_when_key_rejected_raises_auth_error(simulator_session: SimHandle, pool: HostPool) -> None:
    simulator_session.control.status_next(403, endpoint="positionbook", message="Invalid openalgo apikey")
    client = client_for(simulator_session, pool)
    with pytest.raises(AuthError, match="Invalid openalgo apikey"):
        await client.positionbook()
    bad = OpenAlgoClient(simulator_session.rest_url, "not-a-real-key-123", pool=pool)
    with pytest.raises(AuthError):
        await bad.funds()


async def test_order_when_reply_hangs_past_timeout_is_unknown_yet_found_in_book(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool, timeouts=Timeouts(connect=2.0, read=2.0, order=0.3))
    future = await nifty_future(client)
    simulator_session.control.hang_next(1, seconds=1.0, execute=True, endpoint="placeorder")
    with pytest.raises(UnknownOutcomeError):
        await client.place_order(market(future, Action.BUY), strategy=TAG)

    async def executed() -> bool:
        book = await client.orderbook()
        return any(o.strategy == TAG and o.symbol == future.symbol for o in book.orders)

    # The order went through although the client never heard back: the journal must look it up.
    assert await eventually_async(executed, timeout=5.0, what="hung order executed")


async def test_read_when_reply_hangs_past_timeout_raises_timeout(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(
        simulator_session, pool, timeouts=Timeouts(connect=2.0, read=0.3), retry=RetryPolicy(attempts=1)
    )
    simulator_session.control.hang_next(1, seconds=1.0, endpoint="funds")
    with pytest.raises(BrokerTimeoutError):
        await client.funds()


async def test_read_when_rate_limited_once_retries_after_about_a_second(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    simulator_session.control.rate_limit_next(1, endpoint="tradebook")
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await client_for(simulator_session, pool).tradebook() == ()
    assert loop.time() - began >= 0.9


async def test_read_when_429_storm_outlasts_retries_raises_rate_limited(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    simulator_session.control.rate_limit_next(5, endpoint="holdings")
    client = client_for(simulator_session, pool, retry=RetryPolicy(attempts=2))
    with pytest.raises(RateLimitedError) as info:
        await client.holdings()
    assert info.value.http_status == 429


async def test_order_when_rate_limited_raises_without_retry(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    client = client_for(simulator_session, pool)
    future = await nifty_future(client)
    simulator_session.control.rate_limit_next(1, endpoint="placeorder")
    with pytest.raises(RateLimitedError):
        await client.place_order(market(future, Action.BUY), strategy=TAG)
    assert (await client.orderbook()).orders == ()


async def test_latency_when_injected_is_felt_per_call(simulator_session: SimHandle, pool: HostPool) -> None:
    client = client_for(simulator_session, pool)
    await client.ping()
    simulator_session.control.latency(150, endpoint="ping")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await client.ping()
    assert loop.time() - began >= 0.15


# ------------------------------------------------------------------------------- rate pacing


async def test_fan_out_when_paced_by_scheduler_earns_no_429(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    no_retry = RetryPolicy(attempts=1)
    clients = [client_for(simulator_session, pool, i, retry=no_retry) for i in range(3)]
    future = await nifty_future(clients[0])
    # 3 accounts × (60 reads at 50/s + 12 orders at 10/s), all at once, more than the host's 50 pooled
    # connections: requests queue for a connection after leaving the scheduler, and still no 429
    # (attempts=1, so a 429 would raise).
    reads = [c.quotes("NIFTY", "NSE_INDEX") for c in clients for _ in range(60)]
    orders = [c.place_order(market(future, Action.BUY), strategy=TAG) for c in clients for _ in range(12)]
    results = await asyncio.gather(*reads, *orders)
    assert len(results) == 3 * 72


async def test_burst_when_unpaced_does_earn_429(simulator_session: SimHandle, pool: HostPool) -> None:
    client = client_for(simulator_session, pool, limits=RateLimits.unlimited(), retry=RetryPolicy(attempts=1))
    results = await asyncio.gather(
        *(client.quotes("NIFTY", "NSE_INDEX") for _ in range(70)), return_exceptions=True
    )
    assert any(isinstance(r, RateLimitedError) for r in results)


async def test_slow_account_when_calls_hang_does_not_delay_other_accounts(
    simulator_session: SimHandle, pool: HostPool
) -> None:
    slow_key = simulator_session.api_keys[0]
    simulator_session.control.latency(1500, apikey=slow_key)
    slow = client_for(simulator_session, pool, 0)
    fast = client_for(simulator_session, pool, 1)
    slow_calls = asyncio.gather(*(slow.funds() for _ in range(5)))
    await asyncio.sleep(0)  # let the slow calls go out first
    await asyncio.gather(*(fast.funds() for _ in range(20)))
    # All 20 of the other account's calls are done while the slow account's first replies are pending.
    assert not slow_calls.done()
    assert len(await slow_calls) == 5


# ------------------------------------------------------------------------ connections, test


async def test_hundred_sequential_calls_when_pooled_open_one_tcp_connection(
    simulator_session: SimHandle,
) -> None:
    loops = LoopThread()
    port = int(simulator_session.rest_url.rsplit(":", 1)[1])
    proxy = CountingProxy(loops, port)
    proxy.start()
    try:
        async with HostPool() as pool:
            accounts = [
                OpenAlgoClient(proxy.url, key, pool=pool, limits=RateLimits.unlimited())
                for key in simulator_session.api_keys
            ]
            for i in range(100):
                await accounts[i % 3].funds()
        assert proxy.accepted == 1
    finally:
        proxy.stop()
        loops.stop()


def test_check_connection_when_paper_exchange_reports_connected(simulator_session: SimHandle) -> None:
    result = check_connection(simulator_session.rest_url, simulator_session.api_keys[0], timeout=3.0)
    assert result.ok and result.status == "connected"
    assert result.broker == "sandbox"
    assert result.available_cash == Decimal("10000000.00")
    wrong = check_connection(simulator_session.rest_url, "wrong-key-000000", timeout=3.0)
    assert wrong.status == "auth_failed" and not wrong.ok and wrong.message == "key rejected"
