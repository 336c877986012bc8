"""The risk engine against the paper exchange over loopback, on SQLite and PostgreSQL: marks are driven
through ``MarkBook.update`` (the feed manager is tested on its own), exits go through the real
ExitExecutor, and orders are counted at the exchange.

Covered: max loss of a 3-account short strangle → one exit order per leg per account and one risk event
each, later ticks nothing; two rules on one tick → one exit; per-account scope exits only that account;
the trailing stop's state persisted and reloaded after a restart of the component, then firing; a leg
SL on a SELL leg exits only that execution; auto-exit off → one ``alert_only`` event and no order; a
command left by an engine that died after the commit is run by the exit executor's poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from algomirror.db.models import ActivityLog, EngineAlert, EngineCommand, OrderIntent, RiskEvent
from algomirror.engine.exits import ExitExecutor
from algomirror.engine.marks import Mark, MarkBook
from algomirror.engine.risk import RiskConfig, RiskEngine
from tests.helpers import eventually_async
from tests.integration.execution_support import World, make_world
from tests.integration.risk_fault_support import QTY as QTY
from tests.integration.risk_fault_support import configure as configure
from tests.integration.risk_fault_support import configure_leg as configure_leg
from tests.integration.risk_fault_support import entered as entered
from tests.sim_fixtures import SimHandle

STRANGLE = (("SELL", "26200CE"), ("SELL", "25800PE"))
PAISA = Decimal("0.01")


@dataclass
class RecordingBus:
    messages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        self.messages.append((topic, event, data))


@dataclass
class Harness:
    risk: RiskEngine
    book: MarkBook
    bus: RecordingBus
    world: World

    def tick(self, symbol: str, price: Decimal) -> None:
        mark = Mark(ltp=price, at=self.world.clock.now(), source="rest", account_id=None)
        assert self.book.update(symbol, "NFO", mark)


@asynccontextmanager
async def risk_of(
    world: World,
    *,
    engine: type[RiskEngine] = RiskEngine,
    dispatch: bool = True,
    persist_seconds: float = 0.1,
) -> AsyncIterator[Harness]:
    """A running ``engine`` (its real loop) with an ExitExecutor to hand breaches to (none when not
    ``dispatch``), persisting its state every ``persist_seconds``."""
    entry, registry = world.executor()
    exits = ExitExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=entry.config
    )
    book = MarkBook()
    bus = RecordingBus()
    risk = engine(
        world.database,
        book,
        exits=exits if dispatch else None,
        bus=bus,
        clock=world.clock,
        config=RiskConfig(tick=0.05, reload_seconds=0.1, persist_seconds=persist_seconds),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(risk.run(stop))
    try:
        await eventually_async(lambda: _true(bool(risk.runs)), timeout=10, what="open runs loaded")
        yield Harness(risk, book, bus, world)
    finally:
        stop.set()
        await task
        await registry.aclose()


async def _true(value: bool) -> bool:
    return value


def events(world: World, run_id: int) -> list[RiskEvent]:
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


def entries(world: World, run_id: int) -> dict[tuple[int, int], Decimal]:
    """(leg index, account index) → entry average."""
    result = {}
    for e in world.executions(run_id):
        assert e.entry_price is not None
        result[(world.leg_ids.index(e.leg_id), world.account_ids.index(e.account_id))] = e.entry_price
    return result


def exits_at_exchange(world: World) -> dict[int, list[str]]:
    """Per account index, the symbols of BUY orders (buy-backs of the shorts) at the exchange."""
    return {
        i: sorted(o.symbol for o in world.exchange_orders(i) if o.action == "BUY")
        for i in range(len(world.account_ids))
    }


async def all_exited(world: World, run_id: int) -> None:
    async def done() -> bool:
        return {e.status for e in world.executions(run_id)} == {"exited"}

    await eventually_async(done, timeout=20, what="every execution exited")


async def test_max_loss_exits_every_leg_of_every_account_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=3, legs=STRANGLE)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("1000"))
    price = entries(world, run_id)
    ce, pe = world.leg_symbols
    assert exits_at_exchange(world) == {0: [], 1: [], 2: []}

    async with risk_of(world) as h:
        h.tick(ce, price[(0, 0)])
        h.tick(pe, price[(1, 0)])
        assert h.risk.fired == 0 and exit_commands(world) == []
        # −₹20 on 65 units of each account's short call: −₹3,900 in all (≤ −1,000).
        h.tick(ce, price[(0, 0)] + 20)
        h.tick(pe, price[(1, 0)] + 20)  # a second breaching tick in the same moment: nothing more
        h.tick(ce, price[(0, 0)] + 30)
        await all_exited(world, run_id)
        for _ in range(5):  # later ticks and sweeps of the closed run add nothing
            h.tick(ce, price[(0, 0)] + 40)
            await h.risk.sweep()
        await h.risk.drain()

    assert h.risk.fired == 1
    assert [c.token for c in exit_commands(world)] == [f"risk:{run_id}:max_loss"]
    assert exit_commands(world)[0].status == "done"
    assert exits_at_exchange(world) == {i: sorted([ce, pe]) for i in range(3)}
    rows = events(world, run_id)
    assert len(rows) == 6
    assert {(r.event_type, r.action_taken) for r in rows} == {("max_loss", "exit_initiated")}
    assert sorted(r.strategy_execution_id for r in rows) == sorted(e.id for e in world.executions(run_id))
    assert all(r.trigger_value is not None and r.trigger_value <= Decimal("-1000") for r in rows)
    assert all(r.threshold_value == Decimal("1000.00") for r in rows)
    run = world.run(run_id)
    assert run.max_loss_triggered_at is not None and run.max_loss_value is not None
    assert run.max_loss_value <= Decimal("-1000")
    assert run.status == "closed" and run.exit_reason == "max_loss"
    assert {e.exit_reason for e in world.executions(run_id)} == {"max_loss"}
    # Besides the live ``snapshot`` events (tested in test_risk_live.py), one breach event.
    assert [(t, e) for t, e, _ in h.bus.messages if t == f"run:{run_id}:risk" and e != "snapshot"] == [
        (f"run:{run_id}:risk", "max_loss")
    ]


async def test_two_rules_on_one_tick_exit_once_and_a_dead_engines_command_still_runs(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    # Max loss ₹1,000 and a trailing stop of ₹500 (I = −500): a −₹1,300 tick breaches both.
    configure(world, max_loss=Decimal("1000"), trailing_sl=Decimal("500"), trailing_sl_type="amount")
    price = entries(world, run_id)
    ce, pe = world.leg_symbols

    # No dispatch: as if the engine died right after the breach's commit.
    async with risk_of(world, dispatch=False) as h:
        assert h.risk.runs[run_id].trailing is not None
        h.tick(pe, price[(1, 0)])
        h.tick(ce, price[(0, 0)] + 20)
        h.tick(ce, price[(0, 0)] + 25)

        async def recorded() -> bool:
            return len(events(world, run_id)) == 2

        await eventually_async(recorded, timeout=10, what="the breach recorded")
        await h.risk.drain()
    assert h.risk.fired == 1
    assert {(r.event_type, r.action_taken) for r in events(world, run_id)} == {("max_loss", "exit_initiated")}
    run = world.run(run_id)
    assert run.max_loss_triggered_at is not None and run.trailing_triggered_at is None
    [command] = exit_commands(world)
    assert command.status == "pending" and exits_at_exchange(world) == {0: []}

    entry, registry = world.executor()
    exits = ExitExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=entry.config
    )
    try:
        assert exits.recover() == 0
        assert await exits.process_once() == 1
    finally:
        await registry.aclose()
    assert world.command(command.id).status == "done"
    assert exits_at_exchange(world) == {0: sorted([ce, pe])}
    assert {e.status for e in world.executions(run_id)} == {"exited"}


async def test_per_account_scope_exits_only_the_account_that_breached(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=3, legs=STRANGLE)
    other = "NIFTY01DEC2626300CE"
    run_id = await entered(world, symbols={(0, 0): other})  # account 1 holds another call
    configure(world, max_loss=Decimal("1000"), risk_scope="per_account")
    price = entries(world, run_id)
    ce, pe = world.leg_symbols

    async with risk_of(world) as h:
        h.tick(ce, price[(0, 1)])
        h.tick(pe, price[(1, 0)])
        h.tick(other, price[(0, 0)])
        h.tick(other, price[(0, 0)] + 20)  # account 1 alone: −₹1,300

        async def first_out() -> bool:
            rows = world.executions(run_id)
            return {e.status for e in rows if e.account_id == world.account_ids[0]} == {"exited"}

        await eventually_async(first_out, timeout=20, what="account 1 exited")
        await h.risk.drain()
        assert exits_at_exchange(world) == {0: sorted([other, pe]), 1: [], 2: []}
        rest = [e for e in world.executions(run_id) if e.account_id != world.account_ids[0]]
        assert {e.status for e in rest} == {"active"}
        assert [c.token for c in exit_commands(world)] == [f"risk:{run_id}:{world.account_ids[0]}:max_loss"]
        assert world.run(run_id).max_loss_triggered_at is not None

        h.tick(ce, price[(0, 1)] + 20)  # now the other two accounts, each once
        await all_exited(world, run_id)
        await h.risk.drain()
    assert exits_at_exchange(world) == {0: sorted([other, pe]), 1: sorted([ce, pe]), 2: sorted([ce, pe])}
    assert len(exit_commands(world)) == 3
    rows = events(world, run_id)
    assert len(rows) == 6 and {r.event_type for r in rows} == {"max_loss"}


async def test_trailing_state_is_persisted_and_reloaded_after_a_restart(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    price = entries(world, run_id)
    ce, pe = world.leg_symbols
    e_ce, e_pe = price[(0, 0)], price[(1, 0)]
    # Premiums halve: +65 × (e_ce + e_pe) / 2. A stop distance of a quarter of that keeps it well above 0.
    half_ce, half_pe = (e_ce / 2).quantize(PAISA), (e_pe / 2).quantize(PAISA)
    peak = (QTY * (e_ce - half_ce + e_pe - half_pe)).quantize(PAISA)
    distance = (peak / 4).quantize(Decimal("1"))
    configure(world, trailing_sl=distance, trailing_sl_type="amount")
    run = world.run(run_id)
    assert run.entry_completed_at is not None and run.base_premium is not None

    async with risk_of(world) as h:
        assert h.risk.runs[run_id].trailing is not None
        h.tick(ce, e_ce)
        h.tick(pe, e_pe)
        h.tick(ce, half_ce)
        h.tick(pe, half_pe)

        async def stored() -> bool:
            return world.run(run_id).peak_pnl == peak

        await eventually_async(stored, timeout=10, what="the trailing peak written")
        assert h.risk.fired == 0
    run = world.run(run_id)
    assert run.trailing_initial_stop == -distance
    assert run.trailing_stop_level == peak - distance
    assert {e.status for e in world.executions(run_id)} == {"active"}

    async with risk_of(world) as h:  # a restart of the component: the state comes back from the run
        state = h.risk.runs[run_id].trailing
        assert state is not None and (state.initial_stop, state.peak, state.level) == (
            -distance,
            peak,
            peak - distance,
        )
        # Back to 90 % of the entry: +10 % of the premium, below the stop (peak − a quarter of the peak).
        h.tick(ce, (e_ce * Decimal("0.9")).quantize(PAISA))
        h.tick(pe, (e_pe * Decimal("0.9")).quantize(PAISA))
        await all_exited(world, run_id)
        await h.risk.drain()
    assert h.risk.fired == 1
    run = world.run(run_id)
    assert run.trailing_triggered_at is not None and run.exit_reason == "trailing_stop"
    assert run.trailing_value is not None and run.trailing_value <= peak - distance
    assert {r.event_type for r in events(world, run_id)} == {"trailing_stop"}
    assert exits_at_exchange(world) == {0: sorted([ce, pe])}


async def test_leg_stop_loss_on_a_sell_leg_exits_only_that_execution(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    configure_leg(world, 0, stop_loss_type="points", stop_loss_value=Decimal("10"))
    run_id = await entered(world)
    price = entries(world, run_id)
    ce, pe = world.leg_symbols
    short_call = next(e for e in world.executions(run_id) if e.leg_id == world.leg_ids[0])

    async with risk_of(world) as h:

        async def levels_stored() -> bool:
            return world.executions(run_id)[0].stop_loss_price == price[(0, 0)] + 10

        await eventually_async(levels_stored, timeout=10, what="the leg's SL level stored")
        h.tick(pe, price[(1, 0)] + 50)  # the other leg moves against us: no leg rule on it
        h.tick(ce, price[(0, 0)] + Decimal("9.95"))
        assert h.risk.fired == 0
        h.tick(ce, price[(0, 0)] + 10)  # SELL: LTP ≥ SL (inclusive)
        h.tick(ce, price[(0, 0)] + 12)

        async def out() -> bool:
            return next(e for e in world.executions(run_id) if e.id == short_call.id).status == "exited"

        await eventually_async(out, timeout=20, what="the short call exited")
        await h.risk.drain()
    assert h.risk.fired == 1
    rows = {e.id: e for e in world.executions(run_id)}
    call = rows[short_call.id]
    assert call.exit_reason == "stop_loss" and call.sl_hit_at is not None
    assert call.sl_hit_price == price[(0, 0)] + 10
    assert [e.status for i, e in rows.items() if i != short_call.id] == ["active"]
    assert exits_at_exchange(world) == {0: [ce]}
    [event] = events(world, run_id)
    assert (event.strategy_execution_id, event.event_type, event.action_taken) == (
        short_call.id,
        "stop_loss",
        "exit_initiated",
    )
    assert [c.token for c in exit_commands(world)] == [f"risk:exec:{short_call.id}:stop_loss"]


async def test_auto_exit_off_records_one_alert_only_event_and_no_order(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=STRANGLE)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("1000"), auto_exit_on_max_loss=False)
    price = entries(world, run_id)
    ce, pe = world.leg_symbols

    async with risk_of(world) as h:
        h.tick(pe, price[(1, 0)])
        h.tick(ce, price[(0, 0)] + 20)

        async def recorded() -> bool:
            return len(events(world, run_id)) == 1

        await eventually_async(recorded, timeout=10, what="one alert_only event")
        for step in range(5):  # more breaching ticks and sweeps: still one
            h.tick(ce, price[(0, 0)] + 21 + step)
            await h.risk.sweep()
        await h.risk.drain()
    [event] = events(world, run_id)
    assert (event.event_type, event.action_taken) == ("max_loss", "alert_only")
    assert exit_commands(world) == []
    assert exits_at_exchange(world) == {0: [], 1: []}
    assert {e.status for e in world.executions(run_id)} == {"active"}
    assert world.run(run_id).max_loss_triggered_at is not None
    with world.database.session_factory() as session:
        alerts = session.scalar(
            select(func.count(EngineAlert.id)).where(EngineAlert.run_id == run_id, EngineAlert.kind == "risk")
        )
    assert alerts == 1
    assert [e for t, e, _ in h.bus.messages if t == f"user:{world.user_id}:alerts"] == ["risk"]


async def test_unknown_pnl_fires_nothing_and_alerts_after_15_seconds(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("1000"))
    price = entries(world, run_id)
    ce, _ = world.leg_symbols

    async with risk_of(world) as h:
        h.tick(ce, price[(0, 0)] + 100)  # −₹6,500 on the call, but the put has no price: unknown
        world.clock.advance(timedelta(seconds=14))
        await h.risk.sweep()  # still no alert before 15 s, and never a firing
        assert risk_alerts(world, run_id) == 0
        world.clock.advance(timedelta(seconds=2))

        async def alerted() -> bool:
            return risk_alerts(world, run_id) == 1

        await eventually_async(alerted, timeout=10, what="the unknown-P&L alert")
        await h.risk.drain()
    assert h.risk.fired == 0 and events(world, run_id) == [] and exit_commands(world) == []
    assert {e.status for e in world.executions(run_id)} == {"active"}


def risk_alerts(world: World, run_id: int) -> int:
    with world.database.session_factory() as session:
        count = session.scalar(
            select(func.count(EngineAlert.id)).where(EngineAlert.run_id == run_id, EngineAlert.kind == "risk")
        )
    return int(count or 0)


def stored_counts(world: World, run_id: int) -> dict[str, Any]:
    """What a rehearsal must leave as it was: the rows a breach and its exit write, the legs' states
    and the run's latch."""
    with world.database.session_factory() as session:
        counted = {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (RiskEvent, EngineCommand, EngineAlert, ActivityLog, OrderIntent)
        }
    run = world.run(run_id)
    return {
        **counted,
        "legs": sorted((e.id, e.status, e.exit_retry_count) for e in world.executions(run_id)),
        "latch": (run.max_loss_triggered_at, run.max_loss_value, run.status),
    }


async def test_the_start_rehearsal_of_a_breach_writes_nothing_and_sends_nothing(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=STRANGLE)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("1000"))
    before = stored_counts(world, run_id)
    ce, pe = world.leg_symbols

    async with risk_of(world) as h:
        await eventually_async(lambda: _true(h.risk.rehearsed), timeout=10, what="the rehearsal ran")
        assert stored_counts(world, run_id) == before
        assert exits_at_exchange(world) == {0: [], 1: []}
        assert h.risk.fired == 0 and [e for _, e, _ in h.bus.messages if e != "snapshot"] == []
        # The rehearsal's claim did take every short inside its rolled-back transaction.
        assert h.risk.exits is not None
        rehearsal = world.database.rehearsal()
        taken = await asyncio.to_thread(h.risk.exits.rehearse, rehearsal, world.user_id, run_id, "max_loss")
        assert taken == 4
        assert stored_counts(world, run_id) == before

        # The real breach afterwards is neither latched nor claimed by it: it exits once.
        price = entries(world, run_id)
        h.tick(ce, price[(0, 0)] + 20)
        h.tick(pe, price[(1, 0)] + 20)
        await all_exited(world, run_id)
        await h.risk.drain()

    assert h.risk.fired == 1
    assert [c.token for c in exit_commands(world)] == [f"risk:{run_id}:max_loss"]
    assert exits_at_exchange(world) == {i: sorted([ce, pe]) for i in range(2)}
    assert len(events(world, run_id)) == 4


async def test_a_rehearsal_that_fails_does_not_stop_the_protection(
    db_url: str, simulator_session: SimHandle, monkeypatch: Any
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("1000"))
    ce, pe = world.leg_symbols

    def broken(*_: Any) -> int:
        raise RuntimeError("a bug in the rehearsal")

    monkeypatch.setattr(ExitExecutor, "rehearse", broken)
    async with risk_of(world) as h:
        await eventually_async(lambda: _true(h.risk.rehearsed), timeout=10, what="the rehearsal ran")
        price = entries(world, run_id)
        h.tick(ce, price[(0, 0)] + 20)
        h.tick(pe, price[(1, 0)] + 20)
        await all_exited(world, run_id)
        await h.risk.drain()
    assert [c.token for c in exit_commands(world)] == [f"risk:{run_id}:max_loss"]
