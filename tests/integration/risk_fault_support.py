"""Helpers for the risk engine's end-to-end fault tests (issue 12, "Faults"): a short straddle entered on
paper accounts, and the engine's market-data → risk → exit chain running in this process exactly as
``build_engine`` wires it — the real FeedManager over loopback WebSocket writing the MarkBook the real
RiskEngine listens to, breaches handed to the real ExitExecutor (whose own poll runs too) — against the
paper exchange, whose orders are counted in its own books.

The exchange runs a manual clock; a background task advances it one simulated second every 0.1 s, so
ticks flow and the index can be ramped through a threshold. The engine's market clock is the
exchange's, as in the demo. The feed pieces shared with the feed manager's tests live in
``feed_support``; ``DEADLINE`` and ``until`` are re-exported from here for the fault tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update

from algomirror.db.models import (
    EngineAlert,
    EngineCommand,
    FailoverEvent,
    RiskEvent,
    Strategy,
    StrategyLeg,
    TradingAccount,
)
from algomirror.engine.exits import ExitExecutor, ExitRetry
from algomirror.engine.feeds import FeedConfig, FeedManager
from algomirror.engine.marks import Mark, MarkBook
from algomirror.engine.risk import RiskConfig, RiskEngine
from algomirror.simulator.exchange import Order as SimOrder
from tests.helpers import eventually_async
from tests.integration.execution_support import World, executor_of, make_world
from tests.integration.feed_support import DEADLINE as DEADLINE
from tests.integration.feed_support import tick_forever
from tests.integration.feed_support import until as until
from tests.sim_fixtures import SimHandle

# A short ATM straddle (spot starts at 26,000): a rising index loses on the call more than the put gains.
STRADDLE = (("SELL", "26000CE"), ("SELL", "26000PE"))
QTY = 65
SPOT = ("NIFTY", "NSE_INDEX")
START_SPOT = Decimal("26000")

FEED = FeedConfig(
    silent_after=1.5,
    refresh_seconds=0.3,
    backoff_base=0.1,
    backoff_cap=0.5,
    account_rest_seconds=2.0,
    primary_check_seconds=0.5,
    rest_interval=0.1,
    connect_timeout=3.0,
    check_interval=0.05,
    heartbeat_seconds=0.2,
    status_seconds=0.5,
)
# For tests about something other than silence: a loaded CI machine can starve the ticker for more than
# 1.5 s, and the REST fallback would then (rightly) take over the prices those tests pin to one feed.
STEADY_FEED = replace(FEED, silent_after=30.0)
RISK = RiskConfig(tick=0.05, reload_seconds=0.1, persist_seconds=0.1, unknown_alert_seconds=15.0)
# The exit policy's backoff (first wait 10 s), scaled down; the same number of attempts.
FAST_RETRY = ExitRetry(attempts=5, first_wait=0.05, max_wait=0.2, verify_interval=0.05, verify_timeout=10.0)


@dataclass
class RecordingBus:
    """A live bus that keeps what it was given (topic, event, data)."""

    messages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        self.messages.append((topic, event, data))

    def events(self, topic: str) -> list[str]:
        return [e for t, e, _ in self.messages if t == topic]


@dataclass
class Engine:
    """The running chain: feeds → marks → risk → exits, plus what the test watches."""

    world: World
    feeds: FeedManager
    marks: MarkBook
    risk: RiskEngine
    exits: ExitExecutor
    bus: RecordingBus
    # Every accepted mark of the legs' symbols, in order: (symbol, mark).
    seen: list[tuple[str, Mark]] = field(default_factory=list)

    @property
    def sim(self) -> SimHandle:
        return self.world.sim

    def leg_mark(self, index: int) -> Mark | None:
        return self.marks.get(self.world.leg_symbols[index], "NFO")

    def leg_marks_from(self, source: str, account_id: int | None = None) -> bool:
        """Whether every leg's latest mark has ``source`` (and came through ``account_id`` when given)."""
        for i in range(len(self.world.leg_symbols)):
            mark = self.leg_mark(i)
            if mark is None or mark.source != source:
                return False
            if account_id is not None and mark.account_id != account_id:
                return False
        return True

    def pnl_known(self, run_id: int) -> bool:
        run = self.risk.runs.get(run_id)
        return run is not None and run.last_pnl is not None and run.unknown_since is None


def straddle_world(db_url: str, sim: SimHandle, *, accounts: int = 3, primary_ws: str | None = None) -> World:
    """A user with ``accounts`` paper accounts (the first primary, its feed through ``primary_ws`` when
    given) and a short straddle strategy."""
    world = make_world(db_url, sim, accounts=accounts, legs=STRADDLE)
    with world.database.session() as session:
        session.execute(update(TradingAccount).values(websocket_url=sim.ws_url))
        session.execute(
            update(TradingAccount)
            .where(TradingAccount.id == world.account_ids[0])
            .values(is_primary=True, websocket_url=primary_ws or sim.ws_url)
        )
    return world


async def entered(world: World, **plan: Any) -> int:
    """Plan (``plan``: more of ``World.plan``'s options) and enter the world's legs on every account,
    QTY each; the run id."""
    run_id, _ = world.plan(quantity=QTY, **plan)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert {e.status for e in world.executions(run_id)} == {"active"}
    return run_id


def configure(world: World, **values: Any) -> None:
    with world.database.session() as session:
        session.execute(update(Strategy).where(Strategy.id == world.strategy_id).values(**values))


def configure_leg(world: World, index: int, **values: Any) -> None:
    with world.database.session() as session:
        session.execute(update(StrategyLeg).where(StrategyLeg.id == world.leg_ids[index]).values(**values))


@asynccontextmanager
async def running_engine(
    world: World, *, retry: ExitRetry = FAST_RETRY, feed: FeedConfig = FEED
) -> AsyncIterator[Engine]:
    """The feed manager, risk engine and exit executor on one client registry (as ``build_engine``),
    with the exchange's clock as their market clock and its ticks flowing; stopped afterwards."""
    sim = world.sim
    market = sim.running.core.market
    entry, registry = world.executor()
    marks = MarkBook()
    bus = RecordingBus()
    feeds = FeedManager(
        world.database, registry, world.box.decrypt, marks=marks, market_clock=market, config=feed
    )
    exits = ExitExecutor(
        world.database,
        registry,
        world.box.decrypt,
        epoch=world.epoch,
        clock=world.clock,
        market_clock=market,
        config=entry.config,
        retry=retry,
    )
    risk = RiskEngine(world.database, marks, exits=exits, bus=bus, clock=market, config=RISK)
    engine = Engine(world, feeds, marks, risk, exits, bus)
    legs = set(world.leg_symbols)

    def watch(symbol: str, exchange: str, mark: Mark) -> None:
        if symbol in legs:
            engine.seen.append((symbol, mark))

    marks.add_listener(watch)
    stop = asyncio.Event()
    ticker = asyncio.create_task(tick_forever(sim))
    tasks = [asyncio.create_task(c.run(stop)) for c in (feeds, exits, risk)]
    try:
        await until(lambda: bool(risk.runs), "the risk engine holds the open run")
        yield engine
    finally:
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=DEADLINE)
        for task in pending:
            task.cancel()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await registry.aclose()
        world.database.dispose()
        assert not pending, "a component did not stop"
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors


async def ramp(sim: SimHandle, target: Decimal | int, seconds: float) -> None:
    """Move the index linearly to ``target`` over ``seconds`` simulated seconds (the ticker moves time)."""
    await asyncio.to_thread(sim.control.ramp, *SPOT, target, seconds)


# ------------------------------------------------------------------------------------------ records


def exit_orders(world: World) -> dict[int, list[SimOrder]]:
    """Per account index, the exchange's BUY orders (buy-backs of the shorts), any status."""
    return {
        i: [o for o in world.exchange_orders(i) if o.action == "BUY"] for i in range(len(world.account_ids))
    }


def filled_exits(world: World) -> dict[int, list[str]]:
    """Per account index, the symbols of complete BUY orders at the exchange (sorted)."""
    return {
        i: sorted(o.symbol for o in orders if o.status == "complete")
        for i, orders in exit_orders(world).items()
    }


def every_leg_once(world: World) -> dict[int, list[str]]:
    return {i: sorted(world.leg_symbols) for i in range(len(world.account_ids))}


def risk_events(world: World, run_id: int) -> list[RiskEvent]:
    with world.database.session_factory() as session:
        return list(
            session.scalars(select(RiskEvent).where(RiskEvent.run_id == run_id).order_by(RiskEvent.id))
        )


def exit_commands(world: World) -> list[EngineCommand]:
    with world.database.session_factory() as session:
        return list(
            session.scalars(
                select(EngineCommand).where(EngineCommand.kind == "exit").order_by(EngineCommand.id)
            )
        )


def failovers(world: World) -> list[FailoverEvent]:
    with world.database.session_factory() as session:
        return list(session.scalars(select(FailoverEvent).order_by(FailoverEvent.id)))


def alerts(world: World, kind: str) -> list[EngineAlert]:
    with world.database.session_factory() as session:
        return list(
            session.scalars(select(EngineAlert).where(EngineAlert.kind == kind).order_by(EngineAlert.id))
        )


def alert_count(world: World, kind: str) -> int:
    with world.database.session_factory() as session:
        return int(session.scalar(select(func.count(EngineAlert.id)).where(EngineAlert.kind == kind)) or 0)


async def settled_statuses(world: World, run_id: int, wanted: set[str], timeout: float = DEADLINE) -> None:
    """Wait until every execution of the run has one of the ``wanted`` statuses."""

    async def done() -> bool:
        return {e.status for e in world.executions(run_id)} <= wanted

    await eventually_async(done, timeout=timeout, what=f"every execution in {sorted(wanted)}")


async def exit_on_ramp(
    engine: Engine, run_id: int, target: Decimal | int = 26400, seconds: float = 20
) -> int:
    """Ramp the index to ``target`` over ``seconds`` simulated seconds, wait until every execution of the
    run is exited and the risk engine's work is drained; how many rules fired."""
    await ramp(engine.sim, target, seconds)
    await settled_statuses(engine.world, run_id, {"exited"})
    await engine.risk.drain()
    return engine.risk.fired


def assert_max_loss_exited_once(world: World, run_id: int, fired: int) -> None:
    """One rule fired, the run's one exit command is max loss's, and the exchange's books hold one
    filled buy-back per leg per account and nothing else (AssertionError, with what was found)."""
    assert fired == 1, fired
    tokens = [c.token for c in exit_commands(world)]
    assert tokens == [f"risk:{run_id}:max_loss"], tokens
    filled = filled_exits(world)
    assert filled == every_leg_once(world), filled
    orders = exit_orders(world)
    assert all(len(placed) == 2 for placed in orders.values()), orders
