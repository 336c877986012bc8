"""The engine's entry path against the paper exchange over loopback, on SQLite and PostgreSQL: every
order journaled before it is sent, hedges filled before any short, one order per intent key however
often (or by however many executors) a run is executed, unknown outcomes resolved from the orderbook,
the leg-failure policy, and entries halted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select, update

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import EngineAlert, EngineCommand, OrderIntent, TradingAccount
from algomirror.domain import order_state
from algomirror.domain.timeutil import FakeClock, utcnow
from algomirror.engine.commands import CommandProcessor
from algomirror.engine.entry_records import strategy_tag
from algomirror.engine.execution import COMMAND_FAILED_ALERT, EntryExecutor, ExecuteOutcome, ExecutionConfig
from algomirror.engine.factory import build_engine
from algomirror.engine.halts import halt_entries, resume_entries
from tests.helpers import eventually_async
from tests.integration.execution_support import World, executor_of, make_world, nifty
from tests.integration.web_support import make_env
from tests.sim_fixtures import SimHandle, on_both_profiles


@on_both_profiles
async def test_iron_condor_on_three_accounts_fills_every_buy_before_any_sell(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim)
    run_id, command_id = world.plan(quantity=130)
    # Every hedge fills only half at first; the rest fills when the (manual) exchange clock moves on.
    for key in sim.api_keys:
        sim.control.partial_fill(2, 0.5, apikey=key)

    async with executor_of(world) as executor:
        entering = asyncio.create_task(executor.process_once())

        async def hedges_half_filled() -> bool:
            orders = world.all_exchange_orders()
            return len(orders) == 6 and all(o.filled_quantity == 65 for o in orders)

        await eventually_async(hedges_half_filled, timeout=10, what="six half-filled hedges")
        for _ in range(20):  # the engine keeps following them; no short may appear meanwhile
            await asyncio.sleep(0.01)
            assert {o.action for o in world.all_exchange_orders()} == {"BUY"}
        filled_at = sim.control.advance(5)
        assert await entering == 1

    command = world.command(command_id)
    assert command.status == "done", command.error
    orders = world.all_exchange_orders()
    assert len(orders) == 12
    buys = [o for o in orders if o.action == "BUY"]
    sells = [o for o in orders if o.action == "SELL"]
    assert all(o.status == "complete" for o in orders)
    assert {o.strategy for o in orders} == {strategy_tag(world.strategy_id)}
    # From the exchange's own timestamps: every hedge completed (at the later tick) before any short
    # was accepted, and all shorts came after all hedges in the exchange's order sequence.
    assert max(o.created for o in buys) < filled_at
    assert max(o.updated for o in buys) <= min(o.created for o in sells)
    assert max(o.orderid for o in buys) < min(o.orderid for o in sells)

    executions = world.executions(run_id)
    assert len(executions) == 12
    by_order = {o.orderid: o for o in orders}
    for execution in executions:
        assert execution.status == "active", execution.error_message
        assert execution.filled_quantity == execution.quantity == 130
        assert execution.entry_order_ids == [execution.order_id]
        placed = by_order[execution.order_id or ""]
        assert placed.symbol == execution.symbol and placed.quantity == 130
        # The order's average price as the exchange reports it (to the paisa), never a quote.
        vwap = placed.fill_value / placed.filled_quantity
        assert execution.entry_price is not None and abs(execution.entry_price - vwap) <= Decimal("0.005")
    run = world.run(run_id)
    assert run.status == "active" and run.ended_at is None
    assert run.result is not None and run.result["outcome"] == "success" and run.result["placed"] == 12
    assert {i.state for i in world.intents()} == {order_state.COMPLETE}
    # E = |Σ entry × qty of the hedges − Σ entry × qty of the shorts| (sides as the exchange recorded them)
    side = {o.orderid: 1 if o.action == "BUY" else -1 for o in orders}
    net = sum((e.entry_price or 0) * e.filled_quantity * side[e.order_id or ""] for e in executions)
    assert run.base_premium == abs(Decimal(net)).quantize(Decimal("0.01"))


@on_both_profiles
async def test_executing_one_run_again_and_again_sends_one_set(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"), ("SELL", "25800PE")))
    run_id, first = world.plan(token="click-1")
    second = world.add_command(run_id, "click-2")  # a second Execute of the same run

    async with executor_of(world) as one, executor_of(world) as two:
        # Two executors (two processes' worth) race for both commands, and for one command twice.
        claimed = await asyncio.gather(
            one.run_command(first), two.run_command(first), one.run_command(second), two.process_once()
        )
    assert sum(int(c) for c in claimed) == 2
    assert world.command(first).status == world.command(second).status == "done"

    # A restart: a fresh executor on the same database runs the same run once more.
    third = world.add_command(run_id, "retry-3")
    async with executor_of(world) as restarted:
        assert await restarted.process_once() == 1
        outcome = await restarted.execute_run(run_id, user_id=world.user_id)
    assert world.command(third).status == "done" and outcome.status == "done"

    orders = world.all_exchange_orders()
    assert len(orders) == 4, [(o.symbol, o.action) for o in orders]
    assert len(world.intents()) == 4
    assert [e.status for e in world.executions(run_id)] == ["active"] * 4


@on_both_profiles
async def test_timeout_after_the_exchange_accepted_is_resolved_by_tag_without_a_second_order(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, command_id = world.plan()
    # The exchange places the order at once but answers only after 2.5 s; the engine waits 0.5 s.
    sim.control.hang_next(1, seconds=2.5, execute=True, endpoint="placeorder", apikey=sim.api_keys[0])

    async with executor_of(world, order_timeout=0.5) as executor:
        assert await executor.process_once() == 1

    [order] = world.exchange_orders(0)
    [intent] = world.intents()
    assert intent.order_id == order.orderid and intent.state == order_state.COMPLETE
    assert intent.rejection_reason is not None and "outcome unknown" in intent.rejection_reason
    [execution] = world.executions(run_id)
    assert execution.status == "active" and execution.entry_order_ids == [order.orderid]
    assert world.command(command_id).status == "done"


async def test_engine_stopped_mid_send_is_resumed_by_a_new_executor_without_a_second_order(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, command_id = world.plan()
    sim.control.hang_next(1, seconds=2.0, execute=True, endpoint="placeorder", apikey=sim.api_keys[0])

    async with executor_of(world, order_timeout=10.0) as doomed:
        task = asyncio.create_task(doomed.run_command(command_id))

        async def accepted_unanswered() -> bool:
            sent = [i.state for i in world.intents()] == [order_state.SENT]
            return sent and len(world.exchange_orders(0)) == 1

        await eventually_async(accepted_unanswered, timeout=10, what="order accepted, reply pending")
        task.cancel()  # the engine dies between "sent" and the broker's reply
        await asyncio.gather(task, return_exceptions=True)
    assert world.command(command_id).status == "running"

    async with executor_of(world) as restarted:
        assert restarted.recover() == 1
        assert await restarted.process_once() == 1

    [order] = world.exchange_orders(0)
    [intent] = world.intents()
    assert (intent.order_id, intent.state) == (order.orderid, order_state.COMPLETE)
    assert world.executions(run_id)[0].status == "active"
    assert world.command(command_id).status == "done"


def _killed_after_claiming_the_send(
    db_url: str, sim: SimHandle, *, running: bool = True
) -> tuple[World, int, int]:
    """A one-leg run whose entry intent is claimed ``sent`` with no order at the exchange: what an engine
    killed between claiming the send and writing the request leaves (its command ``running`` unless
    ``running`` is False); returns (world, run id, command id)."""
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, command_id = world.plan()
    [execution] = world.executions(run_id)
    journal = world.journal()
    intent = world.record_intent(f"exec:{execution.id}:entry:1", execution.id, side="BUY", quantity=65)
    assert journal.claim_send(intent.id) and not journal.claim_send(intent.id)
    if running:
        with world.database.session() as session:
            command = session.get(EngineCommand, command_id)
            assert command is not None
            command.status = "running"
    return world, run_id, command_id


async def test_a_send_that_never_reached_the_exchange_is_never_sent_again(
    db_url: str, simulator_session: SimHandle
) -> None:
    world, run_id, command_id = _killed_after_claiming_the_send(db_url, simulator_session)

    async with executor_of(world, resolve_seconds=0.3) as restarted:
        assert restarted.recover() == 1
        assert await restarted.process_once() == 1
        assert world.command(command_id).status == "pending"  # retried: resolving, not re-sending
        assert await restarted.process_once() == 1

    assert world.all_exchange_orders() == []
    [stored] = world.intents()
    assert stored.state == order_state.UNKNOWN and stored.order_id is None
    [execution] = world.executions(run_id)
    assert execution.status == "pending" and "unknown" in (execution.error_message or "")
    assert world.run(run_id).status == "entering"
    command = world.command(command_id)
    assert command.status == "pending" and command.result is not None and command.result["attempts"] == 3


async def test_an_entry_send_lost_in_a_crash_is_concluded_unplaced_once_the_orderbook_has_long_lacked_it(
    db_url: str, simulator_session: SimHandle
) -> None:
    # Found by the chaos harness's kill point "after_intent": the restarted engine left the intent
    # unknown for good, the leg pending and the run entering, with no alert once the command gave up.
    world, run_id, command_id = _killed_after_claiming_the_send(db_url, simulator_session)

    async with executor_of(world, resolve_seconds=0.3, unplaced_after=30.0) as restarted:
        assert restarted.recover() == 1
        assert await restarted.process_once() == 1
        # Moments after the send: it may still show up at the broker, so it stays unknown.
        assert world.intents()[0].state == order_state.UNKNOWN
        assert world.command(command_id).status == "pending"
        # Half a minute on (real seconds since its outcome became unknown: the broker's own delays).
        with world.database.session() as session:
            session.execute(update(OrderIntent).values(updated_at=utcnow() - timedelta(seconds=31)))
        assert await restarted.process_once() == 1

    assert world.all_exchange_orders() == []  # concluded, never sent again
    [stored] = world.intents()
    assert stored.state == order_state.CANCELLED and stored.order_id is None
    assert "not placed" in (stored.rejection_reason or "")
    [execution] = world.executions(run_id)
    assert execution.status == "failed"
    assert world.run(run_id).status != "entering"
    assert world.command(command_id).status == "done"


async def test_an_entry_send_of_unknown_outcome_stays_unknown_while_the_broker_position_moved_unseen(
    db_url: str, simulator_session: SimHandle
) -> None:
    # Review: the orderbook may show our order in a shape the lookup does not match (another symbol
    # spelling, sliced, the tag dropped). Then the broker's position differs from our recorded fills, and
    # the intent must not be concluded "not placed" (the unwind would sell the hedge of a live short).
    import httpx

    world, run_id, _ = _killed_after_claiming_the_send(db_url, simulator_session)
    placed = httpx.post(
        f"{simulator_session.rest_url}/api/v1/placeorder",
        json={
            "apikey": simulator_session.api_keys[0],
            "strategy": "broker-renamed",
            "symbol": world.leg_symbols[0],
            "exchange": "NFO",
            "action": "BUY",
            "quantity": "65",
            "pricetype": "MARKET",
            "product": "NRML",
        },
        timeout=5,
    )
    assert placed.status_code == 200, placed.text
    async with executor_of(world, resolve_seconds=0.2, unplaced_after=30.0) as restarted:
        assert restarted.recover() == 1
        assert await restarted.process_once() == 1
        with world.database.session() as session:
            session.execute(update(OrderIntent).values(updated_at=utcnow() - timedelta(seconds=120)))
        assert await restarted.process_once() == 1

    [stored] = world.intents()
    assert stored.state == order_state.UNKNOWN, stored.rejection_reason
    assert world.executions(run_id)[0].status == "pending"


async def test_an_entry_whose_order_stays_unresolved_is_never_given_up_and_raises_a_critical_alert(
    db_url: str, simulator_session: SimHandle
) -> None:
    world, run_id, command_id = _killed_after_claiming_the_send(db_url, simulator_session, running=False)

    def alerts() -> list[EngineAlert]:
        with world.database.session_factory() as session:
            return list(session.scalars(select(EngineAlert).where(EngineAlert.run_id == run_id)))

    # The lost-order rule off: the entry's order stays unknown whatever the engine does.
    async with executor_of(world, resolve_seconds=0.1, unplaced_after=None) as executor:
        for _ in range(executor.config.max_attempts - 1):
            assert await executor.process_once() == 1
        assert alerts() == []
        assert await executor.process_once() == 1
        # Past its attempts: a critical alert naming the run, and the command goes on (giving up
        # would leave the run entering with nothing driving it).
        command = world.command(command_id)
        assert command.status == "pending", command.error
        [alert] = alerts()
        assert (alert.kind, alert.severity, alert.acknowledged_at) == (COMMAND_FAILED_ALERT, "critical", None)
        assert f"run {run_id}" in alert.title and "is not finished" in alert.title
        assert await executor.process_once() == 1  # still driven; the open alert is not repeated
    assert world.command(command_id).status == "pending"
    assert len(alerts()) == 1
    assert world.run(run_id).status == "entering"


@on_both_profiles
async def test_rejected_sell_unwinds_that_accounts_buy_and_says_why(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"), ("SELL", "25800PE")))
    # Account 2's short is refused by the broker (no such contract); account 1 enters normally.
    run_id, command_id = world.plan({(1, 1): nifty("25810PE")})

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1

    first, second = world.exchange_orders(0), world.exchange_orders(1)
    assert [(o.action, o.status) for o in first] == [("BUY", "complete"), ("SELL", "complete")]
    # Account 2: the hedge, then its unwind (a SELL of the hedge); the refused short never existed.
    assert [(o.symbol, o.action, o.status) for o in second] == [
        (nifty("25500PE"), "BUY", "complete"),
        (nifty("25500PE"), "SELL", "complete"),
    ]
    rows = {(e.leg_id, e.account_id): e for e in world.executions(run_id)}
    buy_leg, sell_leg = world.leg_ids
    acct1, acct2 = world.account_ids
    assert rows[(buy_leg, acct1)].status == rows[(sell_leg, acct1)].status == "active"
    refused = rows[(sell_leg, acct2)]
    assert refused.status == "failed" and "not found" in (refused.error_message or "")
    unwound = rows[(buy_leg, acct2)]
    assert unwound.status == "exited" and unwound.exit_reason == "entry_unwind"
    assert "leg 2" in (unwound.exit_reason_detail or "") and "not found" in (unwound.exit_reason_detail or "")
    assert unwound.exited_quantity == 65 and unwound.exit_order_ids == [second[1].orderid]
    assert unwound.exit_price is not None and unwound.realized_pnl is not None
    run = world.run(run_id)
    assert run.status == "active" and run.result is not None and run.result["outcome"] == "partial"
    assert world.command(command_id).status == "done"


async def test_a_run_closed_by_its_unwind_carries_the_unwound_legs_pnl_as_its_final_pnl(
    db_url: str, simulator_session: SimHandle
) -> None:
    # Found by the chaos harness (docs/reliability.md, finding 4): closed by entry_unwind, final P&L NULL.
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"), ("SELL", "25800PE")))
    run_id, _ = world.plan({(1, 0): nifty("25810PE")})  # the short is refused: the hedge is unwound

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1

    run = world.run(run_id)
    assert (run.status, run.exit_reason) == ("closed", "entry_unwind")
    pnl = [e.realized_pnl for e in world.executions(run_id) if e.realized_pnl is not None]
    assert len(pnl) == 1 and run.final_pnl == pnl[0]


async def test_entries_halted_or_an_inactive_account_place_nothing_and_say_why(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"),))
    with world.database.session() as session:
        halt_entries(session, "reconciliation mismatch on Paper 1", world.clock.now())
    run_id, command_id = world.plan()

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1

    assert world.all_exchange_orders() == [] and world.intents() == []
    for execution in world.executions(run_id):
        assert execution.status == "failed"
        assert "entries are halted: reconciliation mismatch" in (execution.error_message or "")
    run = world.run(run_id)
    assert run.status == "failed" and run.ended_at is not None
    assert world.command(command_id).status == "done"

    # Halt cleared, one account switched off: only the other account enters.
    with world.database.session() as session:
        account = session.get(TradingAccount, world.account_ids[1])
        assert account is not None
        account.is_active = False
        resume_entries(session, user_id=None, now=world.clock.now())
    run_id, _ = world.plan(token="tok-2")
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    rows = world.executions(run_id)
    assert [e.status for e in rows] == ["active", "failed"]
    assert "the account is inactive" in (rows[1].error_message or "")
    assert len(world.exchange_orders(0)) == 1 and world.exchange_orders(1) == []


async def test_a_leg_above_the_freeze_quantity_is_sent_as_slices_each_journaled(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, _ = world.plan(quantity=65 * 30)  # 1,950 units; NIFTY freezes at 1,800: 1,755 + 195

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1

    by_size = {o.quantity: o for o in world.exchange_orders(0)}
    assert sorted(by_size) == [195, 1755]
    [execution] = world.executions(run_id)
    assert execution.status == "active" and execution.filled_quantity == 1950
    # Every child id, in slice order (the slices go out concurrently).
    assert execution.entry_order_ids == [by_size[1755].orderid, by_size[195].orderid]
    assert [i.key for i in world.intents()] == [
        f"exec:{execution.id}:entry:1",
        f"exec:{execution.id}:entry:2",
    ]


async def test_the_engine_loop_enters_a_run_and_the_command_processor_leaves_execute_commands(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, command_id = world.plan()

    registry = ClientRegistry()
    try:
        processor = CommandProcessor(world.database, registry, world.box.decrypt, clock=world.clock)
        assert await processor.process_once() == 0  # not its kind: never failed as "unknown"
    finally:
        await registry.aclose()
    assert world.command(command_id).status == "pending"

    async with executor_of(world) as executor:
        stop = asyncio.Event()
        loop = asyncio.create_task(executor.run(stop))

        async def done() -> bool:
            return world.command(command_id).status == "done"

        try:
            await eventually_async(done, timeout=20, what="execute command done")
        finally:
            stop.set()
            await asyncio.wait_for(loop, 20)
    assert len(world.exchange_orders(0)) == 1 and world.run(run_id).status == "active"

    # The engine as built for `algomirror engine` has the component, on the shared registry, and it
    # claims nothing before the service has taken the lock (no epoch, no journal write).
    service = build_engine(make_env(db_url, tmp_path).state.settings, world.database)
    [entry] = [c for c in service.components if c.name == "execution"]
    [commands] = [c for c in service.components if c.name == "commands"]
    assert isinstance(entry, EntryExecutor) and isinstance(commands, CommandProcessor)
    assert entry.registry is commands.registry
    again = world.add_command(run_id, "tok-2")
    assert await entry.run_command(again) is False
    assert world.command(again).status == "pending"
    await entry.registry.aclose()


async def test_an_attempt_that_died_between_slices_is_completed_with_one_order_per_slice(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, command_id = world.plan(quantity=65 * 30)
    [execution] = world.executions(run_id)
    # An engine that recorded the first slice's intent, then died before sending it or recording more.
    world.record_intent(f"exec:{execution.id}:entry:1", execution.id, side="BUY", quantity=1755)

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
        assert await executor.execute_run(run_id, user_id=world.user_id) == ExecuteOutcome(
            "done", {"run_id": run_id, "status": "active", "note": "entered"}
        )

    assert sorted(o.quantity for o in world.exchange_orders(0)) == [195, 1755]
    assert [(i.quantity, i.state) for i in world.intents()] == [(1755, "complete"), (195, "complete")]
    assert world.executions(run_id)[0].filled_quantity == 1950
    assert world.command(command_id).status == "done"


async def test_a_rejected_hedge_keeps_that_accounts_shorts_unsent_and_a_429_is_sent_once_later(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"), ("SELL", "25800PE")))
    run_id, command_id = world.plan()
    sim.control.reject_next(1, "RMS: Margin Exceeds", apikey=sim.api_keys[1])  # account 2's hedge
    sim.control.rate_limit_next(1, endpoint="placeorder", apikey=sim.api_keys[0])  # nothing executed

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1

    assert [(o.action, o.status) for o in world.exchange_orders(0)] == [
        ("BUY", "complete"),
        ("SELL", "complete"),
    ]
    # Account 2: only the refused hedge (the exchange records rejected orders); its short never went.
    assert [(o.action, o.status) for o in world.exchange_orders(1)] == [("BUY", "rejected")]
    rows = {(e.leg_id, e.account_id): e for e in world.executions(run_id)}
    buy_leg, sell_leg = world.leg_ids
    hedge, short = rows[(buy_leg, world.account_ids[1])], rows[(sell_leg, world.account_ids[1])]
    assert hedge.status == "failed" and hedge.error_message == "RMS: Margin Exceeds"
    assert short.status == "failed" and "BUY leg of this account failed" in (short.error_message or "")
    assert (
        rows[(buy_leg, world.account_ids[0])].status
        == rows[(sell_leg, world.account_ids[0])].status
        == "active"
    )
    assert world.command(command_id).status == "done"


async def test_policy_keep_leaves_the_filled_hedge_and_says_so(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(
        db_url, sim, accounts=1, legs=(("BUY", "25500PE"), ("SELL", "25800PE")), on_leg_failure="keep"
    )
    run_id, _ = world.plan({(1, 0): nifty("25810PE")})

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1

    assert [(o.action, o.status) for o in world.exchange_orders(0)] == [("BUY", "complete")]
    hedge, short = world.executions(run_id)
    assert short.status == "failed"
    assert hedge.status == "active" and hedge.exit_reason is None
    assert (hedge.error_message or "").startswith("kept open: leg 2")
    assert world.run(run_id).status == "active"


async def test_command_rows_keep_the_real_clock_and_trading_records_the_market_clock(
    db_url: str, simulator_session: SimHandle
) -> None:
    # In the demo the market runs on the paper exchange's simulated clock while the web's requests are
    # on the real one: each record must be stamped by the clock of its kind, or one page mixes both.
    world = make_world(db_url, simulator_session, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, command_id = world.plan()
    wall = FakeClock(datetime(2026, 12, 2, 5, 0, tzinfo=UTC))
    market = FakeClock(datetime(2026, 12, 1, 4, 0, tzinfo=UTC))
    registry = ClientRegistry(timeouts=Timeouts(connect=2.0, read=5.0), retry=RetryPolicy(attempts=1))
    executor = EntryExecutor(
        world.database,
        registry,
        world.box.decrypt,
        epoch=world.epoch,
        clock=wall,
        market_clock=market,
        config=ExecutionConfig(poll_seconds=0.05, retry_delay=0.0),
    )
    try:
        assert await executor.process_once() == 1
    finally:
        await registry.aclose()
    command = world.command(command_id)
    assert command.status == "done"
    assert command.started_at == wall.now() and command.finished_at == wall.now()
    [execution] = world.executions(run_id)
    assert execution.status == "active" and execution.entry_time == market.now()
    assert world.run(run_id).entry_completed_at == market.now()
    [intent] = world.intents()
    assert intent.sent_at == market.now() and intent.finished_at == market.now()
