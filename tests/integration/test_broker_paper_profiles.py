"""OpenAlgoClient reads both paper-exchange profiles alike (issue 8 item 11), over real loopback HTTP.

On `openalgo-paper` the server answers a flat exit with "No OpenPosition Found. Not placing Exit order." and
puts a closed row's realised P&L in `unrealized_pnl`; on `live-like` it answers "Positions Already Matched"
and sends 0. The client must see the same thing on both: a no-op success, and a flat row with unrealised 0
and the round trip's realised P&L.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy
from algomirror.broker.wire import Action, OrderRequest, Product, SymbolInfo
from algomirror.simulator.profiles import SMART_NOOP_MATCHED, SMART_NOOP_NO_OPEN_POSITION
from tests.sim_fixtures import SimHandle, on_both_profiles

TAG = "AM-profiles"


@pytest.fixture
async def client(simulator_session: SimHandle) -> AsyncIterator[OpenAlgoClient]:
    async with HostPool() as pool:
        yield OpenAlgoClient(
            simulator_session.rest_url,
            simulator_session.api_keys[0],
            pool=pool,
            retry=RetryPolicy(attempts=3, base=0.001, cap=0.005),
        )


async def nifty_future(client: OpenAlgoClient) -> SymbolInfo:
    (first, *_) = await client.expiry("NIFTY", "NFO", "futures")
    rows = await client.search(f"NIFTY{first.strftime('%d%b%y').upper()}FUT", "NFO")
    (future,) = [row for row in rows if row.instrumenttype == "FUT" and row.name == "NIFTY"]
    assert future.lotsize is not None
    return future


def exchange_orders(sim: SimHandle) -> int:
    """How many orders the exchange itself holds for the first account."""
    account = sim.running.core.exchange.accounts[sim.api_keys[0]]
    return sim.running.call(lambda: len(account.orders))


def exchange_realized(sim: SimHandle, symbol: str) -> Decimal:
    """The exchange's own realised P&L today on symbol / NFO / NRML."""
    account = sim.running.core.exchange.accounts[sim.api_keys[0]]
    return sim.running.call(lambda: account.positions[(symbol, "NFO", "NRML")].today_realized)


def flat_exit_text(profile: str) -> str:
    return SMART_NOOP_NO_OPEN_POSITION if profile == "openalgo-paper" else SMART_NOOP_MATCHED


@on_both_profiles
async def test_smart_order_when_target_already_flat_is_a_noop_success_without_an_order(
    simulator_session: SimHandle, client: OpenAlgoClient, sim_profile: str
) -> None:
    assert simulator_session.profile == sim_profile
    future = await nifty_future(client)
    exit_order = OrderRequest(future.symbol, "NFO", Action.SELL, 0, product=Product.NRML)

    result = await client.place_smart_order(exit_order, position_size=0, strategy=TAG)

    assert (result.noop, result.orderid) == (True, None)
    assert result.message == flat_exit_text(sim_profile)
    assert (await client.orderbook()).orders == ()
    assert exchange_orders(simulator_session) == 0


@on_both_profiles
async def test_positionbook_when_round_trip_closed_reads_unrealized_zero_and_the_exchanges_realized(
    simulator_session: SimHandle, client: OpenAlgoClient, sim_profile: str
) -> None:
    future = await nifty_future(client)
    lot = future.lotsize
    assert lot is not None
    control = simulator_session.control
    control.set_price(future.symbol, "NFO", 26000)
    entry = OrderRequest(future.symbol, "NFO", Action.BUY, lot, product=Product.NRML)
    await client.place_order(entry, strategy=TAG)
    control.set_price(future.symbol, "NFO", 26040)
    exit_order = OrderRequest(future.symbol, "NFO", Action.SELL, 0, product=Product.NRML)
    placed = await client.place_smart_order(exit_order, position_size=0, strategy=TAG)
    assert placed.orderid is not None and not placed.noop
    again = await client.place_smart_order(exit_order, position_size=0, strategy=TAG)  # flat now
    assert again.noop and again.message == flat_exit_text(sim_profile)

    book = await client.positionbook()

    (row,) = [p for p in book.positions if p.symbol == future.symbol]
    realized = exchange_realized(simulator_session, future.symbol)
    fills = {t.action: t.average_price for t in await client.tradebook()}
    assert fills["BUY"] is not None and fills["SELL"] is not None
    assert realized == (fills["SELL"] - fills["BUY"]) * lot != 0
    assert row.quantity == 0
    assert row.unrealized_pnl == 0
    assert row.realized_pnl == row.today_realized_pnl == realized
    assert book.total_unrealized_pnl == 0
    # What was on the wire differs by profile; the reading above must not.
    key = simulator_session.api_keys[0]
    raw = httpx.post(f"{simulator_session.api_url}/positionbook", json={"apikey": key}, timeout=10).json()
    (wire_row,) = [r for r in raw["data"] if r["symbol"] == future.symbol]
    assert Decimal(str(wire_row["unrealized_pnl"])) == (realized if sim_profile == "openalgo-paper" else 0)
    assert len((await client.orderbook()).orders) == 2 == exchange_orders(simulator_session)
