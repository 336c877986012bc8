"""End-to-end risk protection on the paper exchange (issue 12, "Faults" and "Tests"): the real feed
manager over loopback WebSocket feeding the real risk engine, breaches exited by the real exit
executor, orders counted in the exchange's own books. See ``risk_fault_support`` for the harness.

Covered here: an index ramp through max loss on a 3-account short straddle → exactly one exit order per
leg per account and one risk event each (both exchange profiles, SQLite and PostgreSQL); a leg stop and
max loss breached by one tick → one exit per execution; the primary's feed dropped → a failover event,
ticks from the backup, and a breach on those ticks still exits exactly once (both profiles); the
exchange closing the feed's socket → a reconnect on the same account (no failover), resubscribed once,
and a breach after it exits once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.execution_support import World
from tests.integration.feed_support import Proxy
from tests.integration.risk_fault_support import (
    QTY,
    SPOT,
    STEADY_FEED,
    assert_max_loss_exited_once,
    configure,
    configure_leg,
    entered,
    every_leg_once,
    exit_commands,
    exit_on_ramp,
    exit_orders,
    failovers,
    filled_exits,
    ramp,
    risk_events,
    running_engine,
    settled_statuses,
    straddle_world,
    until,
)
from tests.sim_fixtures import SimHandle, on_both_profiles

MAX_LOSS = Decimal("3000")  # ₹1,000 an account: about 15 points of the straddle, reached ~60 points up
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@on_both_profiles
async def test_an_index_ramp_through_max_loss_exits_each_leg_of_each_account_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=3)
    run_id = await entered(world)
    configure(world, max_loss=MAX_LOSS)
    primary = world.account_ids[0]
    assert filled_exits(world) == {0: [], 1: [], 2: []}

    async with running_engine(world, feed=STEADY_FEED) as engine:
        await until(
            lambda: engine.leg_marks_from("ws", primary) and engine.pnl_known(run_id),
            "ticks from the primary's feed, the run's P&L known",
        )
        # A fresh feed is trusted from its first tick; the REST fallback stops on its next cycle.
        await until(lambda: not engine.feeds.status(world.user_id).rest, "the REST fallback off")
        assert engine.risk.fired == 0 and exit_commands(world) == []
        since = len(engine.seen)
        claims: list[int] = []
        claim = engine.exits._claim

        def counted(command_id: int) -> tuple[int, dict[str, Any], int] | None:
            claims.append(command_id)
            return claim(command_id)

        engine.exits._claim = counted  # type: ignore[method-assign]
        await ramp(sim, 26400, 20)
        await settled_statuses(world, run_id, {"exited"})
        for _ in range(5):  # sweeps of the closed run add nothing
            await engine.risk.sweep()
        await engine.risk.drain()
        fired = engine.risk.fired

    assert fired == 1
    [command] = exit_commands(world)
    assert (command.token, command.status) == (f"risk:{run_id}:max_loss", "done")
    # The breach's own transaction claimed its exit command: the executor ran it without a claim.
    assert claims == [] and engine.exits.ran == 1
    # The exchange's own books: one buy-back per leg per account, all filled, nothing else.
    assert filled_exits(world) == every_leg_once(world)
    assert all(len(orders) == 2 for orders in exit_orders(world).values())
    rows = risk_events(world, run_id)
    assert sorted(r.strategy_execution_id for r in rows) == sorted(e.id for e in world.executions(run_id))
    assert {(r.event_type, r.action_taken) for r in rows} == {("max_loss", "exit_initiated")}
    assert all(r.trigger_value is not None and r.trigger_value <= -MAX_LOSS for r in rows)
    assert {r.threshold_value for r in rows} == {MAX_LOSS}
    run = world.run(run_id)
    assert (run.status, run.exit_reason) == ("closed", "max_loss")
    assert run.max_loss_value is not None and run.max_loss_value <= -MAX_LOSS
    for e in world.executions(run_id):
        assert (e.status, e.exit_reason, e.exited_quantity) == ("exited", "max_loss", QTY)
        assert e.exit_order_ids is not None and len(e.exit_order_ids) == 1
    assert engine.bus.events(f"run:{run_id}:risk").count("max_loss") == 1
    # Every price the engine acted on from the ramp on came from the WebSocket feed of the primary.
    assert {(m.source, m.account_id) for _, m in engine.seen[since:]} == {("ws", primary)}


@dataclass
class OneTick:
    """What a tick breaching a leg stop and max loss at once left behind."""

    world: World
    run_id: int
    calls: set[int]
    puts: set[int]
    fired: int


async def leg_stop_and_max_loss_on_one_tick(db_url: str, sim: SimHandle) -> OneTick:
    """Two accounts short the straddle, the call leg with a stop 40 points above its entry and the run a
    max loss of ₹2,000; then one jump of the index by 300 points: the call's first tick after it is past
    its stop and takes the run's loss far past ₹2,000 (the put still at its old price)."""
    world = straddle_world(db_url, sim, accounts=2)
    configure_leg(world, 0, stop_loss_type="points", stop_loss_value=Decimal("40"))
    run_id = await entered(world)
    configure(world, max_loss=Decimal("2000"))
    ce, pe = world.leg_symbols
    calls = {e.id for e in world.executions(run_id) if e.symbol == ce}
    puts = {e.id for e in world.executions(run_id) if e.symbol == pe}

    async with running_engine(world) as engine:
        await until(lambda: engine.leg_marks_from("ws") and engine.pnl_known(run_id), "P&L known")

        def levels_stored() -> bool:
            return all(e.stop_loss_price is not None for e in world.executions(run_id) if e.id in calls)

        await until(levels_stored, "the call legs' stop levels stored")
        assert engine.risk.fired == 0
        await asyncio.to_thread(sim.control.set_price, *SPOT, 26300)
        await settled_statuses(world, run_id, {"exited"})
        await engine.risk.drain()
        return OneTick(world, run_id, calls, puts, engine.risk.fired)


@SQLITE
async def test_a_leg_stop_and_max_loss_breached_by_one_tick_exit_each_execution_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    tick = await leg_stop_and_max_loss_on_one_tick(db_url, simulator_session)
    world = tick.world
    assert {c.status for c in exit_commands(world)} == {"done"}
    # One exit per execution, not two, whichever rule owns it.
    assert filled_exits(world) == every_leg_once(world)
    assert all(len(orders) == 2 for orders in exit_orders(world).values())
    executions = world.executions(tick.run_id)
    assert all(len(e.exit_order_ids or []) == 1 and e.exited_quantity == QTY for e in executions)
    assert {e.exit_reason for e in executions} <= {"stop_loss", "max_loss"}
    # One risk event per execution: a rule that fired after another skipped what that one claimed.
    rows = risk_events(world, tick.run_id)
    assert sorted(r.strategy_execution_id for r in rows) == sorted(e.id for e in executions)
    assert {r.event_type for r in rows} <= {"stop_loss", "max_loss"}
    assert world.run(tick.run_id).status == "closed"


@SQLITE
async def test_a_tick_breaching_max_loss_and_a_leg_stop_is_owned_by_max_loss_first_in_order(
    db_url: str, simulator_session: SimHandle
) -> None:
    tick = await leg_stop_and_max_loss_on_one_tick(db_url, simulator_session)
    world = tick.world
    assert tick.fired == 1
    assert [c.token for c in exit_commands(world)] == [f"risk:{tick.run_id}:max_loss"]
    assert {e.exit_reason for e in world.executions(tick.run_id)} == {"max_loss"}
    rows = risk_events(world, tick.run_id)
    assert len(rows) == 4 and {r.event_type for r in rows} == {"max_loss"}


@on_both_profiles
@SQLITE
async def test_a_dropped_primary_feed_fails_over_and_a_breach_on_the_backups_ticks_exits_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    proxy = Proxy(urlsplit(sim.ws_url).port or 0)
    await proxy.start()
    try:
        world = straddle_world(db_url, sim, accounts=3, primary_ws=proxy.url)
        run_id = await entered(world)
        configure(world, max_loss=MAX_LOSS)
        primary, backup = world.account_ids[:2]
        async with running_engine(world, feed=STEADY_FEED) as engine:
            await until(
                lambda: engine.leg_marks_from("ws", primary) and engine.pnl_known(run_id), "primary up"
            )
            await proxy.stop()  # the primary's market-data host goes away (its reconnects fail too)
            [event] = await until(lambda: failovers(world), "a failover event")
            assert (event.from_account_id, event.to_account_id, event.success) == (primary, backup, True)
            assert event.timestamp is not None and "failures" in (event.reason or "")
            await until(lambda: engine.leg_marks_from("ws", backup), "ticks from the backup's feed")
            uid = world.user_id
            await until(lambda: not engine.feeds.status(uid).rest, "the REST fallback off again")
            await until(lambda: engine.pnl_known(run_id), "P&L known on the backup's ticks")
            assert engine.risk.fired == 0 and exit_commands(world) == []
            since = len(engine.seen)
            fired = await exit_on_ramp(engine, run_id)
            status = engine.feeds.status(uid)
    finally:
        await proxy.stop()

    assert fired == 1
    assert status.account_id == backup
    assert [c.token for c in exit_commands(world)] == [f"risk:{run_id}:max_loss"]
    assert filled_exits(world) == every_leg_once(world)
    assert all(len(orders) == 2 for orders in exit_orders(world).values())
    rows = risk_events(world, run_id)
    assert len(rows) == 6 and {r.event_type for r in rows} == {"max_loss"}
    # The breach was acted on from the backup's ticks, and the primary stayed out.
    assert {(m.source, m.account_id) for _, m in engine.seen[since:]} == {("ws", backup)}
    assert len(failovers(world)) == 1


@SQLITE
async def test_the_exchange_dropping_the_feed_reconnects_it_and_a_breach_after_exits_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=2)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("2000"))
    primary = world.account_ids[0]

    async with running_engine(world) as engine:
        await until(lambda: engine.leg_marks_from("ws", primary) and engine.pnl_known(run_id), "feed up")
        assert await asyncio.to_thread(sim.control.ws_drop) == 1  # the exchange closes the feed's socket
        # The reconnect is counted once the old socket's reader has ended, so every tick read from the
        # old socket is in the marks by then: a newer mark can only have come through the new one.
        await until(lambda: engine.feeds.counters.reconnects >= 1, "the drop seen")
        before = engine.leg_mark(0)
        assert before is not None

        def resumed() -> bool:
            mark = engine.leg_mark(0)
            return mark is not None and mark.source == "ws" and mark.at > before.at

        await until(resumed, "ticks again after the reconnect")
        hub = sim.running.core.ws_hub
        assert hub is not None
        # Resubscribed once: one upstream subscription per leg, on one connection (the old socket's
        # are dropped when the exchange's handler of it ends, which may be a moment later).
        await until(lambda: [hub.ref_count(s, "NFO") for s in world.leg_symbols] == [1, 1], "one each")
        await until(lambda: engine.pnl_known(run_id), "P&L known again")
        assert engine.risk.fired == 0
        fired = await exit_on_ramp(engine, run_id)

    assert_max_loss_exited_once(world, run_id, fired)
    assert len(risk_events(world, run_id)) == 4
    assert failovers(world) == []  # back on the same account: a reconnect, not a failover
