"""The chain component (engine.chain) with a real FeedManager against the paper exchange over loopback,
on SQLite and PostgreSQL: a viewing session makes it subscribe the window around ATM (depth) and the
spot, publish ``chain`` events with live quotes, re-centre (releasing the strikes that left) when the
spot moves, release everything when the session expires, and delete expired sessions; with no feed the
sides are filled by REST quotes, labelled so.

The exchange runs a manual clock advanced by a background task (1 simulated second every 0.1 s); the
sessions run on a FakeClock the test moves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import func, select, update

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import TradingAccount, WebSocketSession
from algomirror.domain.instruments import option_symbol
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.chain import ChainConfig, ChainEngine, chain_topic
from algomirror.engine.feeds import MODE_DEPTH, FeedConfig, FeedManager
from algomirror.live import InProcessBus, LiveMessage
from tests.helpers import eventually_async
from tests.integration.execution_support import World, make_world
from tests.integration.web_support import unused_port
from tests.sim_fixtures import SimHandle

T = TypeVar("T")
DEADLINE = 20.0
EXPIRY = date(2026, 12, 1)
ISO = EXPIRY.isoformat()
FEEDS = FeedConfig(
    silent_after=2.0,
    refresh_seconds=0.3,
    backoff_base=0.1,
    backoff_cap=0.5,
    rest_interval=0.2,
    connect_timeout=3.0,
    check_interval=0.05,
    heartbeat_seconds=0.5,
    status_seconds=0.5,
)
CHAIN = ChainConfig(interval=0.2, cleanup_seconds=0.5, rest_interval=0.2, rest_grace=1.0)


@dataclass
class Chain:
    world: World
    feeds: FeedManager
    chain: ChainEngine
    bus: InProcessBus
    sessions: FakeClock

    @property
    def sim(self) -> SimHandle:
        return self.world.sim

    @property
    def uid(self) -> int:
        return self.world.user_id

    def add_session(self, strikes: int, *, ttl: timedelta = timedelta(minutes=5)) -> str:
        now = self.sessions.now()
        token = f"s-{strikes}-{now.timestamp()}"
        with self.world.database.session() as session:
            session.add(
                WebSocketSession(
                    session_id=token,
                    user_id=self.uid,
                    session_type="option_chain",
                    instrument="NIFTY",
                    expiry=ISO,
                    strike_count=strikes,
                    last_heartbeat=now,
                    expires_at=now + ttl,
                )
            )
        return token

    def session_count(self) -> int:
        with self.world.database.session_factory() as session:
            return int(session.scalar(select(func.count()).select_from(WebSocketSession)) or 0)

    def upstream(self, symbol: str, exchange: str = "NFO") -> int:
        hub = self.sim.running.core.ws_hub
        assert hub is not None
        return hub.ref_count(symbol, exchange)


async def _tick_forever(sim: SimHandle) -> None:
    while True:
        await asyncio.to_thread(sim.control.advance, 1)
        await asyncio.sleep(0.1)  # pacing of the simulated market, not a wait for a result


@asynccontextmanager
async def running_chain(db_url: str, sim: SimHandle, *, ws_url: str | None = None) -> AsyncIterator[Chain]:
    """A user with one primary paper account (its feed on ``ws_url`` when given), a FeedManager and the
    chain component on one bus."""
    world = make_world(db_url, sim, accounts=1, legs=(("SELL", "25800PE"),))
    with world.database.session() as session:
        session.execute(update(TradingAccount).values(is_primary=True, websocket_url=ws_url or sim.ws_url))
    registry = ClientRegistry(timeouts=Timeouts(connect=2.0, read=5.0), retry=RetryPolicy(attempts=1))
    bus = InProcessBus()
    market = sim.running.core.market
    feeds = FeedManager(
        world.database, registry, world.box.decrypt, market_clock=market, bus=bus, config=FEEDS
    )
    sessions = FakeClock(datetime.now(UTC))
    chain = ChainEngine(
        world.database,
        feeds,
        registry,
        world.box.decrypt,
        bus=bus,
        clock=market,
        session_clock=sessions,
        config=CHAIN,
    )
    stop = asyncio.Event()
    ticker = asyncio.create_task(_tick_forever(sim))
    tasks = [asyncio.create_task(feeds.run(stop)), asyncio.create_task(chain.run(stop))]
    try:
        yield Chain(world, feeds, chain, bus, sessions)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await registry.aclose()
        world.database.dispose()


async def until(check: Callable[[], T | None], what: str) -> T:
    async def probe() -> T | None:
        return check()

    result = await eventually_async(probe, timeout=DEADLINE, what=what)
    assert result is not None
    return result


async def next_chain(
    bus_messages: Any, accept: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The next ``chain`` event on the subscription that ``accept`` takes, within DEADLINE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        message: LiveMessage | None = await asyncio.to_thread(bus_messages.get, 0.5)
        if message is not None and message.event == "chain" and accept(message.data):
            return dict(message.data)
    raise AssertionError(f"no chain event: {what}")


def _live(data: dict[str, Any]) -> bool:
    rows = data["rows"]
    return bool(rows) and all(r["ce"]["source"] == "ws" and r["pe"]["source"] == "ws" for r in rows)


async def test_a_session_subscribes_the_window_publishes_recentres_and_releases_on_expiry(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    async with running_chain(db_url, sim) as ctx:
        subscription = ctx.bus.subscribe([chain_topic(ctx.uid, "NIFTY", ISO)])
        try:
            ctx.add_session(3)
            data = await next_chain(subscription, _live, "every side live from the feed")
            assert data["instrument"] == "NIFTY" and data["expiry"] == ISO and data["strike_count"] == 3
            assert len(data["rows"]) == 7 and data["spot"] is not None
            atm = Decimal(data["atm"])
            assert [Decimal(r["strike"]) for r in data["rows"]] == [atm + i * 50 for i in range(-3, 4)]
            middle = data["rows"][3]
            assert middle["atm"] and middle["ce"]["tag"] == "ATM" and data["rows"][0]["ce"]["tag"] == "ITM 3"
            assert data["rows"][0]["pe"]["tag"] == "OTM 3"
            # Depth mode: bid/ask and their quantities come with the ticks.
            assert middle["ce"]["bid"] is not None and middle["ce"]["ask_qty"] is not None
            assert middle["ce"]["volume"] is not None and middle["ce"]["oi"] is not None
            assert data["pcr_oi"] is not None and data["pcr_volume"] is not None

            low = option_symbol("NIFTY", EXPIRY, atm - 150, "CE")
            assert ctx.feeds.ref_count(low, "NFO", MODE_DEPTH, user_id=ctx.uid) == 1
            assert ctx.upstream(low) == 1
            # A second, wider viewer of the same chain widens the one window (no second owner).
            ctx.add_session(5)
            wide = await next_chain(subscription, lambda d: len(d["rows"]) == 11, "the wider window")
            assert wide["strike_count"] == 5
            assert ctx.feeds.ref_count(low, "NFO", MODE_DEPTH, user_id=ctx.uid) == 1
            assert list(ctx.chain.groups) == [(ctx.uid, "NIFTY", ISO)]

            # The spot moves 400 points: the window re-centres and the strikes that left are released.
            spot = Decimal(data["spot"])
            sim.control.set_price("NIFTY", "NSE_INDEX", spot + 400)
            moved = await next_chain(
                subscription, lambda d: d["atm"] is not None and Decimal(d["atm"]) >= atm + 350, "re-centred"
            )
            new_atm = Decimal(moved["atm"])
            far = option_symbol("NIFTY", EXPIRY, atm - 250, "PE")
            assert new_atm - 250 > atm - 250
            await until(
                lambda: ctx.upstream(far) == 0 or None, "the strike that left the window unsubscribed"
            )
            assert ctx.feeds.ref_count(far, "NFO", MODE_DEPTH, user_id=ctx.uid) == 0
            top = option_symbol("NIFTY", EXPIRY, new_atm + 250, "CE")
            await until(lambda: ctx.upstream(top) == 1 or None, "the new top strike subscribed")

            # Every session expires: the window is released and the rows are deleted by the cleanup.
            ctx.sessions.advance(timedelta(minutes=6))
            await until(lambda: (not ctx.chain.groups) or None, "the window dropped")
            assert ctx.feeds.ref_count(top, "NFO", MODE_DEPTH, user_id=ctx.uid) == 0
            assert ctx.feeds.wanted(ctx.uid) == set()  # the spot too: nothing else watches it
            await until(lambda: ctx.upstream(top) == 0 or None, "unsubscribed upstream")
            await until(lambda: ctx.session_count() == 0 or None, "expired sessions deleted")
        finally:
            subscription.close()


async def test_without_a_feed_the_sides_come_from_rest_quotes_labelled_rest(
    db_url: str, simulator_session: SimHandle
) -> None:
    # The account's WebSocket URL points at a port nobody listens on: the feed never connects.
    async with running_chain(db_url, simulator_session, ws_url=f"ws://127.0.0.1:{unused_port()}") as ctx:
        subscription = ctx.bus.subscribe([chain_topic(ctx.uid, "NIFTY", ISO)])
        try:
            ctx.add_session(2)

            def from_rest(d: dict[str, Any]) -> bool:
                rows = d["rows"]
                return bool(rows) and all(r["ce"]["source"] == "rest" and r["ce"]["ltp"] for r in rows)

            data = await next_chain(subscription, from_rest, "sides filled by REST")
            assert data["spot_source"] == "rest" and len(data["rows"]) == 5
            assert data["rows"][2]["ce"]["bid_qty"] is None  # multiquotes carries no quantities
            assert ctx.chain.rest_calls >= 1
            assert not ctx.feeds.healthy(ctx.uid)
        finally:
            subscription.close()


async def test_an_expired_contract_or_a_foreign_session_type_is_not_served(
    db_url: str, simulator_session: SimHandle
) -> None:
    async with running_chain(db_url, simulator_session) as ctx:
        now = ctx.sessions.now()
        with ctx.world.database.session() as session:
            session.add_all(
                [
                    WebSocketSession(
                        session_id="old-expiry",
                        user_id=ctx.uid,
                        session_type="option_chain",
                        instrument="NIFTY",
                        expiry="2026-11-24",  # the day before the exchange's date: expired
                        strike_count=2,
                        expires_at=now + timedelta(minutes=5),
                    ),
                    WebSocketSession(
                        session_id="monitor",
                        user_id=ctx.uid,
                        session_type="position_monitor",
                        instrument="NIFTY",
                        expiry=ISO,
                        strike_count=2,
                        expires_at=now + timedelta(minutes=5),
                    ),
                ]
            )
        token = ctx.add_session(1)
        await until(lambda: ctx.chain.groups.get((ctx.uid, "NIFTY", ISO)), "the valid session served")
        assert list(ctx.chain.groups) == [(ctx.uid, "NIFTY", ISO)]
        with ctx.world.database.session() as session:
            session.execute(
                update(WebSocketSession).where(WebSocketSession.session_id == token).values(is_active=False)
            )
        await until(lambda: (not ctx.chain.groups) or None, "an inactive session released")
