"""End-to-end risk protection when prices or orders fail (issue 12, "Faults"), on the paper exchange with
the real feed manager, risk engine and exit executor (harness: ``risk_fault_support``), SQLite.

Covered: every feed silent (and the first account's REST quotes failing) → REST quotes of the next
account drive the risk engine and the exit; every feed silent and every REST quote failing → P&L
unknown, no exit, a visible alert; once prices return the breach exits exactly once; the first exit
order rejected → retried by the exit policy and filled once; every attempt rejected → the legs end in
``error`` with a critical alert, never a second fill; zero-price ticks fire nothing (not even the max
profit they would fake) and the real breach after them exits once.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from algomirror.db.models import OrderIntent
from tests.integration.execution_support import World
from tests.integration.risk_fault_support import (
    QTY,
    alerts,
    assert_max_loss_exited_once,
    configure,
    entered,
    every_leg_once,
    exit_commands,
    exit_on_ramp,
    exit_orders,
    filled_exits,
    ramp,
    risk_events,
    running_engine,
    settled_statuses,
    straddle_world,
    until,
)
from tests.sim_fixtures import SimHandle

MAX_LOSS = Decimal("3000")
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
QUOTES_FAIL = 100_000  # calls: more than any test makes


def exit_intents(world: World) -> list[OrderIntent]:
    return [i for i in world.intents() if i.purpose == "exit"]


@SQLITE
async def test_silence_on_every_feed_lets_rest_quotes_drive_the_exit(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=3)
    run_id = await entered(world)
    configure(world, max_loss=MAX_LOSS)
    # The primary's REST quotes fail too: the fallback rests it and quotes on the next account.
    sim.control.status_next(500, QUOTES_FAIL, endpoint="multiquotes", apikey=sim.api_keys[0])

    async with running_engine(world) as engine:
        await until(lambda: engine.leg_marks_from("ws") and engine.pnl_known(run_id), "feed up")
        await asyncio.to_thread(sim.control.ws_silent, True)
        await until(
            lambda: engine.leg_marks_from("rest") and engine.pnl_known(run_id), "REST marks, P&L known"
        )
        # REST may fill in stale ws marks before the feed is declared silent (engine/feeds.py rest_once).
        assert engine.feeds.status(world.user_id).rest
        status = await until(
            lambda: s if (s := engine.feeds.status(world.user_id)).state != "connected" else None, "silent"
        )
        assert status.rest
        assert engine.risk.fired == 0 and exit_commands(world) == []
        since = len(engine.seen)
        fired = await exit_on_ramp(engine, run_id)
        counters = engine.feeds.counters

    assert_max_loss_exited_once(world, run_id, fired)
    rows = risk_events(world, run_id)
    assert len(rows) == 6 and {(r.event_type, r.action_taken) for r in rows} == {
        ("max_loss", "exit_initiated")
    }
    # Only REST quotes, none from the failing primary, were acted on once the feeds fell silent.
    sources = {(m.source, m.account_id) for _, m in engine.seen[since:]}
    assert {s for s, _ in sources} == {"rest"}
    assert world.account_ids[0] not in {a for _, a in sources}
    assert counters.rest_failures >= 1 and counters.rest_marks > 0
    assert world.run(run_id).exit_reason == "max_loss"


@SQLITE
async def test_no_price_anywhere_exits_nothing_and_alerts_then_the_breach_exits_once_prices_return(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=2)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("2000"))

    async with running_engine(world) as engine:
        await until(lambda: engine.leg_marks_from("ws") and engine.pnl_known(run_id), "feed up")
        # Every feed silent and every REST quote failing: no usable price for any leg.
        sim.control.status_next(500, QUOTES_FAIL, endpoint="multiquotes")
        await asyncio.to_thread(sim.control.ws_silent, True)
        await until(lambda: not engine.pnl_known(run_id), "P&L unknown")
        await ramp(sim, 26400, 5)  # through the threshold while nobody can see it

        def unknown_alert() -> bool:
            return any("unknown" in a.title for a in alerts(world, "risk"))

        await until(unknown_alert, "the P&L-unknown alert")  # after 15 simulated seconds
        # The alert row is committed before it is published: the push to the browser follows it.
        pushed = f"user:{world.user_id}:alerts"
        await until(
            lambda: pushed in {t for t, e, _ in engine.bus.messages if e == "risk_unknown"},
            "the P&L-unknown alert pushed to the browser",
        )
        # Never a guess: nothing fired, nothing was sent, the legs are open and shown so.
        assert engine.risk.fired == 0 and exit_commands(world) == []
        assert {e.status for e in world.executions(run_id)} == {"active"}
        assert filled_exits(world) == {0: [], 1: []}
        assert engine.feeds.counters.rest_failures >= 1

        await asyncio.to_thread(sim.control.clear_faults)  # prices return
        await settled_statuses(world, run_id, {"exited"})
        await engine.risk.drain()
        fired = engine.risk.fired

    assert_max_loss_exited_once(world, run_id, fired)
    assert len(risk_events(world, run_id)) == 4
    assert len([a for a in alerts(world, "risk") if "unknown" in a.title]) == 1


@SQLITE
async def test_a_rejected_exit_order_is_retried_by_the_exit_policy_and_fills_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=3)
    run_id = await entered(world)
    configure(world, max_loss=MAX_LOSS)
    sim.control.reject_next(1, "RMS: margin exceeds", apikey=sim.api_keys[0])

    async with running_engine(world) as engine:
        await until(lambda: engine.leg_marks_from("ws") and engine.pnl_known(run_id), "feed up")
        fired = await exit_on_ramp(engine, run_id)

    assert fired == 1
    [command] = exit_commands(world)
    assert (command.token, command.status) == (f"risk:{run_id}:max_loss", "done")
    orders = exit_orders(world)
    assert sorted(o.status for o in orders[0]) == ["complete", "complete", "rejected"]
    assert [len(orders[i]) for i in (1, 2)] == [2, 2]
    # Filled once per leg per account, the rejected one included (its retry).
    assert filled_exits(world) == every_leg_once(world)
    intents = exit_intents(world)
    assert sorted(i.state for i in intents) == ["complete"] * 6 + ["rejected"]
    retried = [i for i in intents if i.account_id == world.account_ids[0] and ":exit:2:" in i.key]
    assert len(retried) == 1 and retried[0].state == "complete"
    for e in world.executions(run_id):
        assert (e.status, e.exit_reason, e.exited_quantity) == ("exited", "max_loss", QTY)
    assert len(risk_events(world, run_id)) == 6
    assert world.run(run_id).status == "closed"


@SQLITE
async def test_exit_orders_rejected_every_time_end_in_error_with_an_alert_and_no_second_fill(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=2)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("2000"))
    # Every order of the first account is refused: five attempts for each of its two legs.
    sim.control.reject_next(10, "RMS: margin exceeds", apikey=sim.api_keys[0])
    first = world.account_ids[0]

    async with running_engine(world) as engine:
        await until(lambda: engine.leg_marks_from("ws") and engine.pnl_known(run_id), "feed up")
        await ramp(sim, 26400, 20)
        await settled_statuses(world, run_id, {"exited", "error"})
        for _ in range(5):  # the error legs are not exited again by a later sweep or tick
            await engine.risk.sweep()
        await engine.risk.drain()
        fired = engine.risk.fired

    assert fired == 1
    executions = world.executions(run_id)
    assert {e.status for e in executions if e.account_id == first} == {"error"}
    assert {e.status for e in executions if e.account_id != first} == {"exited"}
    orders = exit_orders(world)
    assert [o.status for o in orders[0]] == ["rejected"] * 10
    assert filled_exits(world) == {0: [], 1: sorted(world.leg_symbols)}
    failed = alerts(world, "exit_failed")
    assert len(failed) == 2 and {a.severity for a in failed} == {"critical"}
    assert {a.execution_id for a in failed} == {e.id for e in executions if e.account_id == first}
    assert world.run(run_id).status == "error"
    assert len(exit_commands(world)) == 1
    assert len(risk_events(world, run_id)) == 4


@SQLITE
async def test_zero_price_ticks_fire_nothing_and_the_real_breach_after_them_exits_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=2)
    run_id = await entered(world)
    # Taken as a price, a zero tick of a short leg would read as its whole premium gained (₹12,000 and
    # more an account), far past this max profit.
    configure(world, max_loss=Decimal("2000"), max_profit=Decimal("5000"))

    async with running_engine(world) as engine:
        await until(lambda: engine.leg_marks_from("ws") and engine.pnl_known(run_id), "feed up")
        counters = engine.feeds.counters
        await asyncio.to_thread(sim.control.ws_zero_ticks, 30)
        await until(lambda: counters.zero_price >= 30, "the zero prices discarded and counted")
        await until(lambda: engine.pnl_known(run_id), "good ticks again")
        await engine.risk.sweep()
        await engine.risk.drain()
        assert engine.risk.fired == 0 and exit_commands(world) == []
        assert all(m.ltp > 0 for _, m in engine.seen)
        fired = await exit_on_ramp(engine, run_id)

    assert_max_loss_exited_once(world, run_id, fired)
    assert {r.event_type for r in risk_events(world, run_id)} == {"max_loss"}
    run = world.run(run_id)
    assert run.max_profit_triggered_at is None and run.exit_reason == "max_loss"
