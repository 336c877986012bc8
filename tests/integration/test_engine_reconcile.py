"""Restart recovery and reconciliation (PRODUCT §6.8) against the paper exchange over loopback, on SQLite
and PostgreSQL: matching books change nothing, a failed read is *unverified* (never flat), a position
closed outside or extra manual quantity or an untracked tagged order halts the account's entries and
raises an alert, and the entry path refuses a halted account until a person resumes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.broker.wire import Action, OrderRequest, PriceType, Product
from algomirror.db.models import EngineAlert, StrategyExecution
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.alerts import acknowledge_alert, open_alerts
from algomirror.engine.entry_records import strategy_tag
from algomirror.engine.execution import EntryExecutor
from algomirror.engine.factory import build_engine
from algomirror.engine.halts import (
    account_entries_halted,
    halt_account_entries,
    resume_account_entries,
)
from algomirror.engine.journal import IntentSpec
from algomirror.engine.reconcile import Reconciler, unverified_title
from tests.helpers import eventually_async
from tests.integration.execution_support import World, executor_of, make_world, nifty
from tests.integration.web_support import make_env
from tests.sim_fixtures import SimHandle


async def test_the_entry_path_refuses_a_halted_account_until_it_is_resumed(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"),))
    with world.database.session() as session:
        halt_account_entries(session, world.account_ids[0], "reconciliation: gap on NIFTY", world.clock.now())
    run_id, command_id = world.plan(accounts=[0])

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1

    [halted] = world.executions(run_id)
    assert halted.status == "failed"
    assert halted.error_message == (
        "not placed: entries are halted on this account: reconciliation: gap on NIFTY"
    )
    assert world.all_exchange_orders() == [] and world.intents() == []
    assert world.command(command_id).status == "done"
    assert world.run(run_id).status == "failed"

    with world.database.session() as session:
        assert resume_account_entries(
            session, world.account_ids[0], user_id=world.user_id, now=world.clock.now()
        )
    run_id, _ = world.plan(token="tok-2")
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert [e.status for e in world.executions(run_id)] == ["active", "active"]
    assert len(world.exchange_orders(0)) == len(world.exchange_orders(1)) == 1


# ------------------------------------------------------------------------------------ reconciliation


@asynccontextmanager
async def reconciler_of(world: World) -> AsyncIterator[Reconciler]:
    registry = ClientRegistry(timeouts=Timeouts(connect=2.0, read=5.0), retry=RetryPolicy(attempts=1))
    try:
        yield Reconciler(world.database, registry, world.box.decrypt, clock=world.clock)
    finally:
        await registry.aclose()


async def entered(world: World) -> int:
    """Plan and enter a run of every leg on every account; returns the run id (all active)."""
    run_id, command_id = world.plan()
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert world.command(command_id).status == "done"
    assert {e.status for e in world.executions(run_id)} == {"active"}
    return run_id


async def trade_outside(
    world: World,
    account_index: int,
    symbol: str,
    action: str,
    quantity: int = 65,
    *,
    tag: str = "manual",
    limit: Decimal | None = None,
) -> str:
    """An order placed on the paper exchange by someone else than AlgoMirror (a person at the broker's
    terminal); returns the order id."""
    registry = ClientRegistry(retry=RetryPolicy(attempts=1))
    try:
        client = registry.client(0, world.sim.rest_url, world.sim.api_keys[account_index], name="terminal")
        order = OrderRequest(
            symbol=symbol,
            exchange="NFO",
            action=Action(action),
            quantity=quantity,
            product=Product.NRML,
            pricetype=PriceType.LIMIT if limit is not None else PriceType.MARKET,
            price=limit if limit is not None else Decimal(0),
        )
        ack = await client.place_order(order, strategy=tag)
        return ack.orderid
    finally:
        await registry.aclose()


def snapshot(world: World, run_id: int) -> list[tuple[object, ...]]:
    return [
        (e.id, e.status, e.filled_quantity, e.exited_quantity, e.quantity, e.error_message)
        for e in world.executions(run_id)
    ]


def alerts(world: World) -> list[EngineAlert]:
    with world.database.session_factory() as session:
        return list(session.scalars(select(EngineAlert).order_by(EngineAlert.id)))


def halted(world: World, account_index: int) -> str | None:
    with world.database.session_factory() as session:
        return account_entries_halted(session, world.account_ids[account_index])


TWO_LEGS = (("BUY", "25500PE"), ("SELL", "25800PE"))


async def test_matching_books_change_nothing(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=TWO_LEGS)
    run_id = await entered(world)
    before = snapshot(world, run_id)
    async with reconciler_of(world) as reconciler:
        results = await reconciler.reconcile_all_once()
    assert sorted(r.account_id for r in results) == world.account_ids
    assert {r.outcome for r in results} == {"verified"}
    assert all(r.gaps == [] and r.stray_orders == [] for r in results)
    assert alerts(world) == [] and halted(world, 0) is None and halted(world, 1) is None
    assert snapshot(world, run_id) == before


async def test_a_failed_positionbook_read_is_unverified_never_flat(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=TWO_LEGS)
    run_id = await entered(world)
    before = snapshot(world, run_id)
    sim.control.status_next(500, endpoint="positionbook", message="broker session expired")
    async with reconciler_of(world) as reconciler:
        [result] = await reconciler.reconcile_all_once()
        assert result.outcome == "unverified" and "positionbook" in (result.reason or "")
        assert snapshot(world, run_id) == before and halted(world, 0) is None
        [marker] = alerts(world)
        assert (marker.kind, marker.severity, marker.acknowledged_at) == ("reconciliation", "info", None)
        assert marker.title == unverified_title("Paper 1")
        # Failing again adds nothing; a good read clears the marker (and only it).
        sim.control.status_next(500, endpoint="positionbook")
        assert (await reconciler.reconcile_account(world.account_ids[0])).outcome == "unverified"
        assert len(alerts(world)) == 1
        assert (await reconciler.reconcile_account(world.account_ids[0])).outcome == "verified"
        [marker] = alerts(world)
        assert marker.acknowledged_at is not None and marker.acknowledged_by is None
        # A failed orderbook read is just as unknown.
        sim.control.status_next(502, endpoint="orderbook")
        result = await reconciler.reconcile_account(world.account_ids[0])
        assert result.outcome == "unverified" and "orderbook" in (result.reason or "")
    assert snapshot(world, run_id) == before and halted(world, 0) is None
    assert [a.severity for a in alerts(world)] == ["info", "info"]


async def test_a_position_closed_outside_halts_the_account_and_alerts_critical(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=TWO_LEGS)
    run_id = await entered(world)
    before = snapshot(world, run_id)
    short = nifty("25800PE")
    await trade_outside(world, 0, short, "BUY")  # the short bought back by hand

    async with reconciler_of(world) as reconciler:
        results = {r.account_id: r for r in await reconciler.reconcile_all_once()}
    mine = results[world.account_ids[0]]
    assert mine.outcome == "mismatch" and mine.halted
    [gap] = mine.unexplained
    assert (gap.symbol, gap.product, gap.ours, gap.broker) == (short, "NRML", -65, 0)
    [alert] = alerts(world)
    assert alert.severity == "critical" and alert.account_id == world.account_ids[0]
    assert f"{short} NFO NRML: ours -65, broker +0" in alert.title
    assert "closed outside" in (alert.details or "")
    reason = halted(world, 0)
    assert reason is not None and short in reason and "ours -65" in reason
    # Nothing of ours was changed; the other account is fine.
    assert snapshot(world, run_id) == before
    assert results[world.account_ids[1]].outcome == "verified" and halted(world, 1) is None


async def test_an_error_leg_still_open_at_the_broker_is_ours_not_a_gap(
    db_url: str, simulator_session: SimHandle
) -> None:
    # An exit that used up its attempts leaves the leg in error with its position open: that position
    # is ours (a person retries or confirms it closed), not an unexplained broker quantity.
    world = make_world(db_url, simulator_session, accounts=1, legs=TWO_LEGS)
    run_id = await entered(world)
    with world.database.session_factory() as session:
        for execution in session.scalars(select(StrategyExecution).where(StrategyExecution.run_id == run_id)):
            execution.status = "error"
        session.commit()

    async with reconciler_of(world) as reconciler:
        [result] = await reconciler.reconcile_all_once()
    assert result.outcome == "verified" and not result.halted
    assert alerts(world) == [] and halted(world, 0) is None


async def test_extra_manual_quantity_is_shown_and_halts_but_is_never_adopted(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=TWO_LEGS)
    run_id = await entered(world)
    before = snapshot(world, run_id)
    hedge = nifty("25500PE")
    await trade_outside(world, 0, hedge, "BUY", 130)
    # A manual position on a symbol none of our strategies trades is listed, not judged.
    await trade_outside(world, 0, nifty("24000PE"), "BUY")

    async with reconciler_of(world) as reconciler:
        [result] = await reconciler.reconcile_all_once()
    assert result.outcome == "mismatch" and result.halted
    [gap] = result.unexplained
    assert (gap.symbol, gap.ours, gap.broker) == (hedge, 65, 195)
    assert result.untracked == {(nifty("24000PE"), "NFO", "NRML"): 65}
    [alert] = alerts(world)
    assert alert.severity == "warning" and "extra quantity" in alert.title
    assert "ours +65, broker +195" in alert.title
    assert halted(world, 0) is not None
    assert snapshot(world, run_id) == before  # not adopted


async def test_an_untracked_tagged_working_order_alerts_and_halts(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=TWO_LEGS)
    await entered(world)
    tag = strategy_tag(world.strategy_id)
    orderid = await trade_outside(world, 0, nifty("25500PE"), "BUY", tag=tag, limit=Decimal("0.05"))

    async with reconciler_of(world) as reconciler:
        [result] = await reconciler.reconcile_all_once()
    assert result.outcome == "mismatch" and result.halted
    assert result.unexplained == []
    assert [s.orderid for s in result.stray_orders] == [orderid]
    [alert] = alerts(world)
    assert alert.severity == "warning" and f"order {orderid}" in alert.title and tag in alert.title


async def test_a_fill_the_engine_did_not_record_is_left_to_the_executors(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, _ = world.plan()
    [execution] = world.executions(run_id)
    # The engine recorded the intent, claimed its send, the order filled, and the engine died.
    intent = world.record_intent(f"exec:{execution.id}:entry:1", execution.id, side="BUY", quantity=65)
    assert world.journal().claim_send(intent.id)
    await trade_outside(world, 0, world.leg_symbols[0], "BUY", tag=strategy_tag(world.strategy_id))

    async with reconciler_of(world) as reconciler:
        [result] = await reconciler.reconcile_all_once()
    assert result.outcome == "explained"
    [gap] = result.gaps
    assert (gap.ours, gap.broker, gap.explained) == (0, 65, True)
    assert alerts(world) == [] and halted(world, 0) is None
    assert world.executions(run_id)[0].status == "pending"  # no fill written by reconciliation


async def test_acknowledged_gap_is_hidden_and_resume_lets_entries_through(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=TWO_LEGS)
    await entered(world)
    await trade_outside(world, 0, nifty("25800PE"), "BUY")
    async with reconciler_of(world) as reconciler:
        [result] = await reconciler.reconcile_all_once()
        [alert_id] = result.alert_ids
        with world.database.session() as session:
            assert [a.id for a in open_alerts(session, world.user_id)] == [alert_id]
            assert acknowledge_alert(session, alert_id, user_id=world.user_id, now=world.clock.now())
            assert resume_account_entries(
                session, world.account_ids[0], user_id=world.user_id, now=world.clock.now()
            )
        with world.database.session_factory() as session:
            assert open_alerts(session, world.user_id) == []
        # The same gap, acknowledged today, is not raised or halted again.
        [again] = await reconciler.reconcile_all_once()
    assert again.outcome == "mismatch" and not again.halted
    assert halted(world, 0) is None and len(alerts(world)) == 1


def test_the_engine_runs_reconciliation_on_its_shared_registry(db_url: str, tmp_path: Path) -> None:
    service = build_engine(make_env(db_url, tmp_path).state.settings, Database(db_url))
    [reconciler] = [c for c in service.components if c.name == "reconciliation"]
    [entry] = [c for c in service.components if c.name == "execution"]
    assert isinstance(reconciler, Reconciler) and isinstance(entry, EntryExecutor)
    assert reconciler.registry is entry.registry
    assert reconciler.interval == 60.0


async def test_the_component_checks_at_start_and_then_only_in_market_hours(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=(("BUY", "25500PE"),))
    await entered(world)
    registry = ClientRegistry(retry=RetryPolicy(attempts=1))
    sunday = FakeClock(datetime(2026, 11, 29, 5, 0, tzinfo=UTC))
    closed = Reconciler(
        world.database, registry, world.box.decrypt, market_clock=sunday, interval=0.01, closed_poll=0.01
    )
    open_ = Reconciler(world.database, registry, world.box.decrypt, market_clock=world.clock, interval=0.01)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in (closed, open_)]
    try:

        async def open_market_passes() -> bool:
            # The closed-market component's start-up pass may finish after the other's first passes.
            return open_.passes >= 3 and closed.passes >= 1

        await eventually_async(open_market_passes, timeout=10, what="periodic passes in market hours")
        started = open_.passes

        async def more_open_passes() -> bool:
            return open_.passes >= started + 3

        await eventually_async(more_open_passes, timeout=10, what="more passes in market hours")
        # On a Sunday only the start-up pass ran, however often the component woke up.
        assert closed.passes == 1
        assert closed.last[world.account_ids[0]].outcome == "verified"
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await registry.aclose()
    assert alerts(world) == []


async def test_working_orders_our_intents_own_are_not_strays(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=(("BUY", "25500PE"), ("BUY", "26500CE")))
    run_id, _ = world.plan()
    first, second = world.executions(run_id)
    tag = strategy_tag(world.strategy_id)
    journal = world.journal()
    # A resting LIMIT entry of ours, acknowledged with its order id.
    owned = world.record_intent(f"exec:{first.id}:entry:1", first.id, side="BUY", quantity=65)
    assert journal.claim_send(owned.id)
    owned_id = await trade_outside(world, 0, world.leg_symbols[0], "BUY", tag=tag, limit=Decimal("0.05"))
    journal.advance(owned.id, "acknowledged", order_id=owned_id)
    # A send whose outcome is unknown (no order id yet): the one matching tagged order is its own.
    unknown = journal.record(
        IntentSpec(
            key=f"exec:{second.id}:entry:1",
            account_id=world.account_ids[0],
            symbol=world.leg_symbols[1],
            exchange="NFO",
            product="NRML",
            side="BUY",
            quantity=65,
            strategy_tag=tag,
            execution_id=second.id,
        )
    )
    assert journal.claim_send(unknown.id)
    journal.advance(unknown.id, "unknown")
    sent = await trade_outside(world, 0, world.leg_symbols[1], "BUY", tag=tag, limit=Decimal("0.05"))

    async with reconciler_of(world) as reconciler:
        [result] = await reconciler.reconcile_all_once()
        assert result.outcome == "verified" and result.stray_orders == [] and result.gaps == []
        # A second working order for the same unknown intent is one too many.
        extra = await trade_outside(world, 0, world.leg_symbols[1], "BUY", tag=tag, limit=Decimal("0.05"))
        [result] = await reconciler.reconcile_all_once()
    # Which of the two is the intent's is the executor's to decide; one of them is not ours.
    assert result.outcome == "mismatch"
    [stray] = result.stray_orders
    assert stray.orderid in (sent, extra) and stray.orderid != owned_id
    assert halted(world, 0) is not None
