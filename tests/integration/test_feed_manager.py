"""The feed manager (PRODUCT §7.1, §7.3, §7.4) against the paper exchange over loopback, on SQLite and
PostgreSQL: ticks of an open execution's symbol become ws marks, two owners of a symbol share one
upstream subscription (also after a reconnect), a dropped feed reconnects, a primary whose socket is
gone fails over to the backup and comes back, silence everywhere brings REST marks, zero and stale ticks
are discarded and counted, and the websocket_connections / failover_events rows are written.

The exchange runs a manual clock; a background task advances it (1 simulated second every 0.1 s) so
ticks flow. The primary account reaches the exchange's WebSocket through a loopback TCP proxy the test
can close (the exchange's own drop fault drops every connection and lets them straight back in).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

from sqlalchemy import select, update

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import FailoverEvent, TradingAccount, WebSocketConnection
from algomirror.engine.feeds import FeedConfig, FeedManager, backoff_delay
from algomirror.engine.marks import Mark, MarkBook
from algomirror.live import InProcessBus
from tests.helpers import eventually_async
from tests.integration.execution_support import World, make_world
from tests.integration.feed_support import DEADLINE, Proxy, tick_forever, until
from tests.sim_fixtures import SimHandle, on_both_profiles

SPOT = ("NIFTY", "NSE_INDEX")
CONFIG = FeedConfig(
    silent_after=2.0,
    refresh_seconds=0.3,
    backoff_base=0.1,
    backoff_cap=0.5,
    account_rest_seconds=2.0,
    primary_check_seconds=0.5,
    rest_interval=0.2,
    connect_timeout=3.0,
    check_interval=0.05,
    heartbeat_seconds=0.2,
    status_seconds=0.5,
)


@dataclass
class Feeds:
    world: World
    manager: FeedManager
    marks: MarkBook
    bus: InProcessBus
    symbol: str

    @property
    def sim(self) -> SimHandle:
        return self.world.sim

    @property
    def primary(self) -> int:
        return self.world.account_ids[0]

    @property
    def backup(self) -> int:
        return self.world.account_ids[1]

    def ws_mark(self, account_id: int | None = None, after: Mark | None = None) -> Mark | None:
        mark = self.marks.get(self.symbol, "NFO")
        if mark is None or mark.source != "ws":
            return None
        if account_id is not None and mark.account_id != account_id:
            return None
        if after is not None and mark.at <= after.at:
            return None
        return mark

    def connections(self) -> dict[int, WebSocketConnection]:
        with self.world.database.session_factory() as session:
            return {r.account_id: r for r in session.scalars(select(WebSocketConnection))}

    def failovers(self) -> list[FailoverEvent]:
        with self.world.database.session_factory() as session:
            return list(session.scalars(select(FailoverEvent).order_by(FailoverEvent.id)))


@asynccontextmanager
async def running_feeds(
    db_url: str, sim: SimHandle, *, proxy: Proxy | None = None, primary_key: str | None = None
) -> AsyncIterator[Feeds]:
    """A user with two paper accounts (the first primary, through ``proxy`` when given, with
    ``primary_key`` as its API key when given), a planned run holding one pending execution per account
    of a NIFTY put, and a running FeedManager."""
    world = make_world(db_url, sim, accounts=2, legs=(("SELL", "25800PE"),))
    with world.database.session() as session:
        if primary_key is not None:
            session.execute(
                update(TradingAccount)
                .where(TradingAccount.id == world.account_ids[0])
                .values(api_key_encrypted=world.box.encrypt(primary_key))
            )
        session.execute(update(TradingAccount).values(websocket_url=sim.ws_url))
        session.execute(
            update(TradingAccount)
            .where(TradingAccount.id == world.account_ids[0])
            .values(is_primary=True, websocket_url=proxy.url if proxy else sim.ws_url)
        )
    world.plan()
    registry = ClientRegistry(timeouts=Timeouts(connect=2.0, read=5.0), retry=RetryPolicy(attempts=1))
    marks = MarkBook()
    bus = InProcessBus()
    manager = FeedManager(
        world.database,
        registry,
        world.box.decrypt,
        marks=marks,
        market_clock=sim.running.core.market,
        bus=bus,
        config=CONFIG,
    )
    stop = asyncio.Event()
    ticker = asyncio.create_task(tick_forever(sim))
    task = asyncio.create_task(manager.run(stop))
    try:
        yield Feeds(world, manager, marks, bus, world.leg_symbols[0])
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await registry.aclose()
        world.database.dispose()


def ref_count(feeds: Feeds, symbol: str, exchange: str) -> int:
    hub = feeds.sim.running.core.ws_hub
    assert hub is not None
    return hub.ref_count(symbol, exchange)


# ------------------------------------------------------------------------------------------ marks


@on_both_profiles
async def test_ticks_of_an_open_execution_reach_the_markbook_as_ws_marks(
    db_url: str, simulator_session: SimHandle
) -> None:
    subscription = None
    async with running_feeds(db_url, simulator_session) as feeds:
        subscription = feeds.bus.subscribe([f"user:{feeds.world.user_id}:feed"])
        mark = await until(lambda: feeds.ws_mark(feeds.primary), "a ws mark")
        assert mark.ltp > 0 and mark.at.tzinfo is not None
        now = simulator_session.running.core.market.now()
        assert feeds.marks.usable(feeds.symbol, "NFO", now) is not None
        # The underlying spot of the open run is watched too.
        spot = await until(lambda: feeds.marks.get(*SPOT), "a spot mark")
        assert spot.source == "ws" and spot.ltp > Decimal(10000)
        uid = feeds.world.user_id
        # The REST fallback switches off on its next cycle after the first ticks, not at once.
        status = await until(
            lambda: s if not (s := feeds.manager.status(uid)).rest else None, "REST fallback off"
        )
        assert status.state == "connected" and status.account_id == feeds.primary
        assert status.subscriptions == 2
        assert feeds.manager.counters.accepted > 0

        row = await until(lambda: feeds.connections().get(feeds.primary), "the connection row")
        assert row.connection_id == f"feed:{feeds.primary}"
        assert row.status == "authenticated" and row.connected_at is not None

        async def counted() -> bool:
            current = feeds.connections()[feeds.primary]
            return current.messages_received > 0 and current.last_heartbeat is not None

        await eventually_async(counted, timeout=DEADLINE, what="messages counted")
        message = await asyncio.to_thread(subscription.get, DEADLINE)
        assert message is not None and message.event == "status"
        assert message.data["user_id"] == feeds.world.user_id
        assert {"state", "account_id", "last_message_age", "counters"} <= set(message.data)
    subscription.close()
    assert feeds.connections()[feeds.primary].status == "disconnected"
    assert feeds.connections()[feeds.primary].disconnected_at is not None


@on_both_profiles
async def test_two_owners_of_one_symbol_share_one_upstream_subscription_also_after_a_reconnect(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    banknifty = ("BANKNIFTY", "NSE_INDEX")
    async with running_feeds(db_url, sim) as feeds:
        manager = feeds.manager
        await until(lambda: feeds.ws_mark(), "feed up")
        manager.want("chain:a", [banknifty], 2)
        manager.want("chain:b", [banknifty], 2)
        assert manager.ref_count(*banknifty, 2) == 2
        await until(lambda: feeds.marks.get(*banknifty), "BANKNIFTY ticks")
        assert ref_count(feeds, *banknifty) == 1
        # The engine's spot owner and a chain owner of the same key and mode: still one subscription.
        manager.want("chain:c", [SPOT], 2)
        assert manager.ref_count(*SPOT, 2) == 2
        assert ref_count(feeds, *SPOT) == 1

        reconnects = manager.counters.reconnects
        assert await asyncio.to_thread(sim.control.ws_drop) == 1
        hub = sim.running.core.ws_hub
        assert hub is not None

        async def reconnected() -> bool:
            # Counted when the loss is seen; a tick already in flight on the old socket may still
            # land after that, so wait for the exchange to hold the new connection.
            return manager.counters.reconnects > reconnects and len(hub.clients) == 1

        await eventually_async(reconnected, timeout=DEADLINE, what="a new connection")
        before = feeds.marks.get(*banknifty)

        async def resumed() -> bool:
            # A tick of the new connection (not a REST fallback quote of the gap).
            mark = feeds.marks.get(*banknifty)
            return mark is not None and mark.source == "ws" and before is not None and mark.at > before.at

        await eventually_async(resumed, timeout=DEADLINE, what="ticks after the reconnect")
        assert ref_count(feeds, *banknifty) == 1
        assert ref_count(feeds, *SPOT) == 1
        assert len(sim.running.core.ws_hub.clients) == 1  # type: ignore[union-attr]

        manager.release("chain:a")
        await asyncio.sleep(CONFIG.check_interval * 4)  # give a wrong unsubscribe its chance to happen
        assert ref_count(feeds, *banknifty) == 1
        manager.release("chain:b")
        await until(lambda: ref_count(feeds, *banknifty) == 0, "unsubscribed")
        assert ref_count(feeds, *SPOT) == 1  # the engine still wants the spot
    # Reconnecting on the same account is not a failover.
    assert feeds.failovers() == []


# ------------------------------------------------------------------------------------------ failover


async def test_a_primary_whose_feed_is_gone_fails_over_to_the_backup_and_comes_back(
    db_url: str, simulator_session: SimHandle
) -> None:
    proxy = Proxy(urlsplit(simulator_session.ws_url).port or 0)
    await proxy.start()
    try:
        async with running_feeds(db_url, simulator_session, proxy=proxy) as feeds:
            first = await until(lambda: feeds.ws_mark(feeds.primary), "primary")
            await proxy.stop()
            from_backup = await until(
                lambda: feeds.ws_mark(feeds.backup, after=first), "ticks from the backup"
            )
            assert from_backup.ltp > 0
            [event] = feeds.failovers()
            assert (event.from_account_id, event.to_account_id, event.success) == (
                feeds.primary,
                feeds.backup,
                True,
            )
            assert "3 failures" in (event.reason or "")
            assert event.timestamp is not None
            assert feeds.manager.status(feeds.world.user_id).account_id == feeds.backup
            rows = feeds.connections()
            assert rows[feeds.primary].status == "error" and rows[feeds.backup].status == "authenticated"

            await proxy.start()
            await until(lambda: feeds.ws_mark(feeds.primary, after=from_backup), "back on the primary")
            back = feeds.failovers()[-1]
            assert (back.from_account_id, back.to_account_id, back.reason, back.success) == (
                feeds.backup,
                feeds.primary,
                "primary restored",
                True,
            )
            assert feeds.connections()[feeds.backup].status == "disconnected"
            assert feeds.manager.counters.failovers == 2
    finally:
        await proxy.stop()


async def test_a_refused_primary_key_fails_over_at_once(db_url: str, simulator_session: SimHandle) -> None:
    async with running_feeds(db_url, simulator_session, primary_key="revoked-key") as feeds:
        mark = await until(lambda: feeds.ws_mark(feeds.backup), "ticks from the backup")
        assert mark.ltp > 0
        [event] = feeds.failovers()
        assert (event.from_account_id, event.to_account_id, event.reason, event.success) == (
            feeds.primary,
            feeds.backup,
            "auth failed (1 failure)",
            True,
        )
        assert feeds.connections()[feeds.primary].status == "failed"


async def test_the_sync_reporting_the_feed_account_down_moves_the_feed_to_the_backup(
    db_url: str, simulator_session: SimHandle
) -> None:
    async with running_feeds(db_url, simulator_session) as feeds:
        first = await until(lambda: feeds.ws_mark(feeds.primary), "ticks from the primary")
        with feeds.world.database.session() as session:
            session.execute(
                update(TradingAccount)
                .where(TradingAccount.id == feeds.primary)
                .values(connection_status="error")
            )
        await until(lambda: feeds.ws_mark(feeds.backup, after=first), "ticks from the backup")
        [event] = feeds.failovers()
        assert (event.from_account_id, event.to_account_id, event.reason, event.success) == (
            feeds.primary,
            feeds.backup,
            "account error",
            True,
        )
        # Still down: the feed does not go back to it.
        assert feeds.manager.status(feeds.world.user_id).account_id == feeds.backup


def test_backoff_doubles_from_one_second_up_to_the_cap_with_jitter() -> None:
    for failures, nominal in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 30.0), (60, 30.0)):
        delays = [backoff_delay(failures) for _ in range(50)]
        assert all(nominal * 0.8 <= d <= min(30.0, nominal * 1.2) for d in delays), (failures, delays)
    assert len({backoff_delay(2) for _ in range(20)}) > 1  # jittered


async def test_silence_on_every_feed_brings_rest_marks_until_ticks_return(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    async with running_feeds(db_url, sim) as feeds:
        await until(lambda: feeds.ws_mark(), "feed up")
        await asyncio.to_thread(sim.control.ws_silent, True)

        def rest_mark() -> Mark | None:
            mark = feeds.marks.get(feeds.symbol, "NFO")
            return mark if mark is not None and mark.source == "rest" else None

        mark = await until(lambda: rest_mark(), "a REST mark")
        assert mark.ltp > 0 and mark.account_id in feeds.world.account_ids
        assert feeds.marks.usable(feeds.symbol, "NFO", sim.running.core.market.now()) is not None
        # The REST marks may start before the feed is declared silent: a ws mark too old to act on is
        # filled in even while the feed still counts as connected.
        assert feeds.manager.status(feeds.world.user_id).rest
        assert feeds.manager.counters.rest_marks >= 1
        silent = await until(
            lambda: s if (s := feeds.manager.status(feeds.world.user_id)).state != "connected" else None,
            "the feed declared silent",
        )
        assert silent.rest

        await asyncio.to_thread(sim.control.ws_silent, False)
        await until(lambda: feeds.ws_mark(after=mark), "ws marks again")

        async def rest_off() -> bool:
            return not feeds.manager.status(feeds.world.user_id).rest

        await eventually_async(rest_off, timeout=DEADLINE, what="REST fallback off")


# ------------------------------------------------------------------------------------------ discards


@on_both_profiles
async def test_zero_and_stale_ticks_are_discarded_and_counted(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    async with running_feeds(db_url, sim) as feeds:
        await until(lambda: feeds.ws_mark(), "feed up")
        seen: list[Mark] = []
        feeds.marks.add_listener(lambda symbol, exchange, mark: seen.append(mark))
        counters = feeds.manager.counters
        # One fault at a time: the exchange applies both to the same quote when armed together.
        await asyncio.to_thread(sim.control.ws_zero_ticks, 3)

        async def zeros() -> bool:
            return counters.zero_price >= 3

        await eventually_async(zeros, timeout=DEADLINE, what="zero prices counted")
        await asyncio.to_thread(sim.control.ws_stale_ticks, 3, 120.0)

        async def stale() -> bool:
            return counters.stale >= 3

        await eventually_async(stale, timeout=DEADLINE, what="stale ticks counted")
        assert counters.zero_price == 3 and counters.stale == 3
        assert all(m.ltp > 0 for m in seen)
        now = sim.running.core.market.now()
        assert all((now - m.at).total_seconds() < CONFIG.stale_after + 5 for m in seen)
        # Ticks keep flowing after the bad ones.
        last = feeds.marks.get(feeds.symbol, "NFO")
        await until(lambda: feeds.ws_mark(after=last), "good ticks again")
