"""The Supertrend exit component against a fake gateway history (and once against the paper exchange's),
with a running RiskEngine, the real ExitExecutor and the paper exchange for the orders, on SQLite and
PostgreSQL. The market clock is a FakeClock moved by the test; the component is driven by ``step``.

Covered: fires only on a closed candle (the forming candle already breaks out, nothing happens until
close + 3 s), exactly once (later closes and a restarted component add nothing; the stored latch), not on
a warm-up shortfall, unknown on missing history (alert, no exit), a late candle retried then skipped
with an alert at close + 30 s, and the paper exchange's own history through the account's client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import EngineAlert, EngineCommand, RiskEvent, Strategy
from algomirror.db.session import Database
from algomirror.engine.exits import ExitExecutor
from algomirror.engine.factory import build_engine, find_component
from algomirror.engine.feeds import FeedManager
from algomirror.engine.marks import Mark, MarkBook
from algomirror.engine.premium_series import HistorySource
from algomirror.engine.risk import RiskConfig, RiskEngine
from algomirror.engine.supertrend_rule import SupertrendConfig, SupertrendRule
from tests.helpers import eventually_async
from tests.integration.execution_support import T0, World, executor_of, make_world
from tests.integration.web_support import make_env
from tests.premium_support import FakeHistory
from tests.premium_support import Path as PricePath
from tests.sim_fixtures import SimHandle

STRANGLE = (("SELL", "26200CE"), ("SELL", "25800PE"))
QTY = 65


@dataclass
class RecordingBus:
    messages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        self.messages.append((topic, event, data))

    def supertrend(self, run_id: int) -> list[dict[str, Any]]:
        return [d for t, e, d in self.messages if t == f"run:{run_id}:risk" and e == "supertrend"]


@dataclass
class Harness:
    world: World
    risk: RiskEngine
    rule: SupertrendRule
    book: MarkBook
    bus: RecordingBus
    run_id: int

    async def at(self, when: datetime, *, marks: bool = True) -> None:
        """Move the market clock to ``when``, give every leg a fresh mark (unless not ``marks``), and
        step the component."""
        self.world.clock.set(when)
        for e in self.world.executions(self.run_id) if marks else ():
            assert e.symbol is not None and e.entry_price is not None
            self.book.update(e.symbol, "NFO", Mark(e.entry_price, when, "rest", None))
        await self.rule.step()


def _ist(hh: int, mm: int, ss: int = 0) -> datetime:
    """Today (T0's date, Wed 25 Nov 2026) at hh:mm:ss IST."""
    return T0 + timedelta(hours=hh - 10, minutes=mm - 30, seconds=ss)


def breakout_at(when: datetime, base: str, jump: str) -> PricePath:
    """A flat price that jumps by ``jump`` from ``when`` on."""
    low, high = Decimal(base), Decimal(base) + Decimal(jump)
    return lambda at: high if at >= when else low


async def entered(world: World) -> int:
    run_id, _ = world.plan(quantity=QTY)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert {e.status for e in world.executions(run_id)} == {"active"}
    return run_id


def configure(world: World, **values: Any) -> None:
    settings: dict[str, Any] = {
        "supertrend_exit_enabled": True,
        "supertrend_exit_type": "breakout",
        "supertrend_period": 3,
        "supertrend_multiplier": Decimal("1"),
        "supertrend_timeframe": "5m",
        **values,
    }
    with world.database.session() as session:
        session.execute(update(Strategy).where(Strategy.id == world.strategy_id).values(**settings))


@asynccontextmanager
async def harness(
    world: World, run_id: int, source: HistorySource | None, **config: Any
) -> AsyncIterator[Harness]:
    """A running RiskEngine (its own loop) with an ExitExecutor, and the Supertrend component stepped
    by the test; ``source`` None = the component's own client of the user's account."""
    entry, registry = world.executor()
    exits = ExitExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=entry.config
    )
    book = MarkBook()
    bus = RecordingBus()
    risk = RiskEngine(
        world.database,
        book,
        exits=exits,
        bus=bus,
        clock=world.clock,
        config=RiskConfig(tick=0.05, reload_seconds=0.1, persist_seconds=0.1),
    )
    history = ClientRegistry(timeouts=Timeouts(connect=2.0, read=5.0), retry=RetryPolicy(attempts=1))
    rule = SupertrendRule(
        world.database,
        history,
        world.box.decrypt,
        risk=lambda: risk,
        marks=book,
        bus=bus,
        clock=world.clock,
        config=SupertrendConfig(reload_seconds=0.0, **config),
        source_for=None if source is None else (lambda user_id: (source, 1)),
    )
    rule.attach()
    stop = asyncio.Event()
    task = asyncio.create_task(risk.run(stop))
    try:
        await eventually_async(lambda: _true(run_id in risk.runs), timeout=10, what="open run loaded")
        yield Harness(world, risk, rule, book, bus, run_id)
    finally:
        rule.detach()
        stop.set()
        await task
        await registry.aclose()
        await history.aclose()


async def _true(value: bool) -> bool:
    return value


def exit_commands(world: World) -> list[EngineCommand]:
    with world.database.session_factory() as session:
        return list(session.scalars(select(EngineCommand).where(EngineCommand.kind == "exit")))


def alerts(world: World) -> list[EngineAlert]:
    with world.database.session_factory() as session:
        return list(
            session.scalars(
                select(EngineAlert).where(EngineAlert.kind == "supertrend").order_by(EngineAlert.id)
            )
        )


async def all_exited(world: World, run_id: int) -> None:
    async def done() -> bool:
        return {e.status for e in world.executions(run_id)} == {"exited"}

    await eventually_async(done, timeout=20, what="every execution exited")


async def test_fires_once_on_the_closed_candle_never_on_the_forming_one(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=STRANGLE)
    run_id = await entered(world)
    configure(world)
    ce, pe = world.leg_symbols
    # The combined premium (CE + PE) jumps by 60 at 10:37, inside the 10:35–10:40 candle.
    source = FakeHistory(
        world.clock, {ce: breakout_at(_ist(10, 37, 0), "100", "60"), pe: breakout_at(T0, "90", "0")}
    )
    async with harness(world, run_id, source) as h:
        await h.at(_ist(10, 35, 2))  # 10:30 closed 2 s ago: not yet (the delay is 3 s)
        assert h.bus.supertrend(run_id) == []
        await h.at(_ist(10, 35, 3))
        [first] = h.bus.supertrend(run_id)
        assert first["state"] == "ok" and first["direction"] == 1 and first["exit_type"] == "breakout"
        assert first["candle_at"] == _ist(10, 30).isoformat() and first["close"] == "380.00"
        for moment in (_ist(10, 38), _ist(10, 39, 59), _ist(10, 40, 2)):
            # The forming candle (the gateway serves it) is already above the line: nothing.
            await h.at(moment)
            assert h.risk.fired == 0 and exit_commands(world) == []
        await h.at(_ist(10, 40, 3))
        fired = h.bus.supertrend(run_id)[-1]
        assert fired["candle_at"] == _ist(10, 35).isoformat() and fired["direction"] == -1
        # 2 accounts × 1 lot: 2 × (160 + 90).
        assert fired["close"] == "500.00" and fired["message"] == "exit state"
        assert h.risk.fired == 1
        await all_exited(world, run_id)
        for moment in (_ist(10, 45, 3), _ist(10, 50, 3)):
            await h.at(moment)
        await h.risk.drain()
        assert h.risk.fired == 1
    assert [c.token for c in exit_commands(world)] == [f"risk:{run_id}:supertrend_exit"]
    run = world.run(run_id)
    assert run.supertrend_triggered_at == _ist(10, 40, 3) and run.exit_reason == "supertrend_exit"
    with world.database.session_factory() as session:
        rows = list(session.scalars(select(RiskEvent).where(RiskEvent.run_id == run_id)))
    assert len(rows) == 4 and {r.event_type for r in rows} == {"supertrend_exit"}
    assert all(r.details is not None and "breakout: close 500.00 > ST" in r.details for r in rows)


async def test_an_exit_state_waits_for_a_known_pnl(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world)
    ce, pe = world.leg_symbols
    source = FakeHistory(
        world.clock, {ce: breakout_at(_ist(10, 31), "100", "60"), pe: breakout_at(T0, "90", "0")}
    )
    async with harness(world, run_id, source) as h:
        await h.at(_ist(10, 30, 0))  # marks at 10:30: 5 minutes old by the evaluation below, not usable
        await h.at(_ist(10, 35, 3), marks=False)
        [event] = h.bus.supertrend(run_id)
        assert event["direction"] == -1 and event["message"] == "exit state"
        await h.at(_ist(10, 35, 4), marks=False)
        assert h.risk.fired == 0 and exit_commands(world) == []
        await h.at(_ist(10, 35, 5))  # fresh marks: the run's P&L is known, the exit fires
        assert h.risk.fired == 1
        await all_exited(world, run_id)
    assert [c.token for c in exit_commands(world)] == [f"risk:{run_id}:supertrend_exit"]


async def test_no_exit_while_the_strategys_risk_monitoring_is_off(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world, risk_monitoring_enabled=False)
    ce, pe = world.leg_symbols
    source = FakeHistory(
        world.clock, {ce: breakout_at(_ist(10, 31), "100", "60"), pe: breakout_at(T0, "90", "0")}
    )
    async with harness(world, run_id, source) as h:
        await h.at(_ist(10, 35, 3))
        [event] = h.bus.supertrend(run_id)
        assert event["direction"] == -1 and event["message"] == "exit state"
        await h.at(_ist(10, 35, 5))
        await h.risk.drain()
        assert h.risk.fired == 0 and exit_commands(world) == []
    assert world.run(run_id).supertrend_triggered_at is None


async def test_a_restarted_component_reads_the_stored_latch(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world)
    ce, pe = world.leg_symbols
    source = FakeHistory(
        world.clock, {ce: breakout_at(_ist(10, 31), "100", "60"), pe: breakout_at(T0, "90", "0")}
    )
    # The latch is stored (an exit that is still working, say): a new component must not fire again.
    with world.database.session() as session:
        from algomirror.db.models import StrategyRun

        session.execute(
            update(StrategyRun)
            .where(StrategyRun.id == run_id)
            .values(supertrend_triggered_at=_ist(10, 30, 1))
        )
    async with harness(world, run_id, source) as h:
        await h.at(_ist(10, 35, 3))
        [event] = h.bus.supertrend(run_id)
        assert event["direction"] == -1 and event["message"] == "exited on Supertrend"
        await h.risk.drain()
        assert h.risk.fired == 0 and exit_commands(world) == []


async def test_no_exit_on_a_warm_up_shortfall(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world)
    ce, pe = world.leg_symbols
    # Listed at 10:00 today: 7 closed candles by 10:35 (period 3 needs 30).
    source = FakeHistory(
        world.clock,
        {ce: breakout_at(_ist(10, 31), "100", "60"), pe: breakout_at(T0, "90", "0")},
        since={ce: _ist(10, 0), pe: _ist(10, 0)},
    )
    async with harness(world, run_id, source) as h:
        await h.at(_ist(10, 35, 3))
        [event] = h.bus.supertrend(run_id)
        assert event["state"] == "warming" and event["message"] == "warming up: 7 of 30 closed candles"
        assert event["direction"] is None and event["close"] == "250.00"
        await h.risk.drain()
        assert h.risk.fired == 0 and exit_commands(world) == []


async def test_missing_history_is_unknown_with_an_alert_and_no_exit(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world)
    ce, pe = world.leg_symbols
    source = FakeHistory(
        world.clock,
        {ce: breakout_at(_ist(10, 31), "100", "60"), pe: breakout_at(T0, "90", "0")},
        missing={pe},
    )
    async with harness(world, run_id, source) as h:
        await h.at(_ist(10, 35, 3))
        await h.at(_ist(10, 35, 40))  # past the late window: no retry, the same single alert
        events = h.bus.supertrend(run_id)
        assert {e["state"] for e in events} == {"unknown"}
        assert all(e["message"] is not None and pe in e["message"] for e in events)
        await h.risk.drain()
        assert h.risk.fired == 0 and exit_commands(world) == []
    [alert] = alerts(world)
    assert alert.run_id == run_id and alert.details is not None and pe in alert.details


async def test_a_late_candle_is_retried_then_skipped_with_an_alert(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world)
    ce, pe = world.leg_symbols
    source = FakeHistory(
        world.clock, {ce: breakout_at(_ist(10, 31), "100", "60"), pe: breakout_at(T0, "90", "0")}
    )
    async with harness(world, run_id, source, retry_seconds=5.0) as h:
        h.rule.detach()  # no tick candles: the gateway alone, which falls 340 s behind
        source.lag = 340.0
        await h.at(_ist(10, 35, 3))  # served up to 10:29:23: no 10:30 candle yet
        calls = len(source.calls)
        await h.at(_ist(10, 35, 5))  # before the retry time: no call
        assert len(source.calls) == calls and h.bus.supertrend(run_id) == []
        await h.at(_ist(10, 35, 8))  # a retry: still incomplete
        assert len(source.calls) > calls and h.bus.supertrend(run_id) == []
        await h.at(_ist(10, 35, 30))  # close + 30 s: skipped
        [event] = h.bus.supertrend(run_id)
        assert event["state"] == "unknown" and "10:30 IST candle" in event["message"]
        assert "skipped" in event["message"]
        await h.at(_ist(10, 36))  # the skipped candle is not tried again
        assert len(h.bus.supertrend(run_id)) == 1
        await h.risk.drain()
        assert h.risk.fired == 0 and exit_commands(world) == []
    [alert] = alerts(world)
    assert alert.title.endswith("Supertrend candle skipped")


async def test_the_paper_exchanges_history_through_the_accounts_client(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world)
    async with harness(world, run_id, None) as h:
        world.sim.control.advance_to(_ist(10, 35, 3))
        await h.at(_ist(10, 35, 3))
        [event] = h.bus.supertrend(run_id)
        # The synthetic sessions before today cover the warm-up; today's 10:30 candle is the one read.
        assert event["state"] == "ok" and event["candle_at"] == _ist(10, 30).isoformat(), event
        assert event["direction"] in (1, -1) and Decimal(event["close"]) > 0 and Decimal(event["line"]) > 0
        await h.risk.drain()


def test_the_engine_runs_it_after_the_risk_engine_on_the_feeds_registry(db_url: str, tmp_path: Path) -> None:
    service = build_engine(make_env(db_url, tmp_path).state.settings, Database(db_url))
    names = [c.name for c in service.components]
    assert names.index("supertrend") > names.index("risk")
    rule = find_component(service, "supertrend")
    risk = find_component(service, "risk")
    feeds = find_component(service, "feeds")
    assert isinstance(rule, SupertrendRule) and isinstance(feeds, FeedManager)
    assert rule._risk() is risk and rule.registry is feeds.registry and rule.marks is feeds.marks


async def test_its_own_loop_evaluates_at_the_close(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world)
    ce, pe = world.leg_symbols
    source = FakeHistory(world.clock, {ce: breakout_at(T0, "100", "0"), pe: breakout_at(T0, "90", "0")})
    async with harness(world, run_id, source, tick=0.02) as h:
        h.rule.detach()  # run() attaches it again
        world.clock.set(_ist(10, 35, 3))
        stop = asyncio.Event()
        task = asyncio.create_task(h.rule.run(stop))
        try:

            async def evaluated() -> bool:
                return bool(h.bus.supertrend(run_id))

            await eventually_async(evaluated, timeout=10, what="the 10:30 candle evaluated")
        finally:
            stop.set()
            await task
        [event] = h.bus.supertrend(run_id)
        assert event["state"] == "ok" and event["candle_at"] == _ist(10, 30).isoformat()
        assert event["direction"] == 1 and h.risk.fired == 0
