"""The engine's exit path against the paper exchange over loopback, on SQLite and PostgreSQL: exits of
one leg, one account, a run; shorts bought back before hedges are sold; one exit order per open leg
however many commands race for it; a crash between intent and send, and a lost reply, completed without
a second order; a rejected exit leaves the leg open and says why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from algomirror.db.models import EngineAlert, EngineCommand, StrategyLeg, TradingAccount
from algomirror.domain import order_state
from algomirror.engine.entry_records import strategy_tag
from algomirror.engine.execution import COMMAND_FAILED_ALERT
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.exit_records import claim_exit
from algomirror.engine.exits import ExitExecutor, ExitRetry
from algomirror.engine.factory import build_engine
from tests.factories import make_user
from tests.helpers import eventually_async
from tests.integration.execution_support import IRON_CONDOR, World, executor_of, make_world
from tests.integration.web_support import make_env
from tests.sim_fixtures import SimHandle, on_both_profiles

HEDGED = (("BUY", "25500PE"), ("SELL", "25800PE"))


@asynccontextmanager
async def exits_of(
    world: World, retry: ExitRetry | None = None, **options: Any
) -> AsyncIterator[ExitExecutor]:
    executor, registry = world.exit_executor(retry, **options)
    try:
        yield executor
    finally:
        await registry.aclose()


async def entered(world: World, **plan: Any) -> int:
    run_id, _ = world.plan(**plan)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert {e.status for e in world.executions(run_id)} == {"active"}
    return run_id


def queue_exit(
    world: World,
    scope: Any,
    token: str,
    *,
    run_id: int | None = None,
    account_id: int | None = None,
    execution_id: int | None = None,
) -> int:
    with world.database.session() as session:
        command = request_exit(
            session,
            user_id=world.user_id,
            scope=scope,
            token=token,
            run_id=run_id,
            account_id=account_id,
            execution_id=execution_id,
        )
        return command.id


def position(world: World, account_index: int, symbol: str) -> int:
    account = world.sim.running.core.exchange.accounts[world.sim.api_keys[account_index]]
    return sum(p.quantity for p in account.positions.values() if p.contract.symbol == symbol)


def exit_intents(world: World) -> list[tuple[str, str]]:
    return [(i.key, i.state) for i in world.intents() if i.purpose == "exit"]


async def test_exit_one_leg_buys_back_that_short_only(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id = await entered(world)
    hedge, short = world.executions(run_id)
    command_id = queue_exit(world, "execution", "exit-1", execution_id=short.id)

    async with exits_of(world) as exits:
        assert await exits.process_once() == 1

    assert world.command(command_id).status == "done"
    orders = world.exchange_orders(0)
    assert len(orders) == 3
    buyback = orders[2]
    assert (buyback.symbol, buyback.action, buyback.quantity, buyback.status) == (
        short.symbol,
        "BUY",
        65,
        "complete",
    )
    assert buyback.strategy == strategy_tag(world.strategy_id)
    hedge, short = world.executions(run_id)
    assert hedge.status == "active" and hedge.exited_quantity == 0
    assert short.status == "exited" and short.exited_quantity == 65
    assert short.exit_order_ids == [buyback.orderid] and short.exit_reason == "manual"
    assert short.exit_time is not None
    vwap = buyback.fill_value / buyback.filled_quantity
    assert short.exit_price is not None and abs(short.exit_price - vwap) <= Decimal("0.005")
    assert short.entry_price is not None
    assert short.realized_pnl == ((short.entry_price - short.exit_price) * 65).quantize(Decimal("0.01"))
    assert exit_intents(world) == [(f"exec:{short.id}:exit:1:1", order_state.COMPLETE)]
    assert position(world, 0, short.symbol or "") == 0 and position(world, 0, hedge.symbol or "") == 65
    assert world.run(run_id).status == "active"

    # A second exit of the exited leg finds nothing open: no order.
    again = queue_exit(world, "execution", "exit-2", execution_id=short.id)
    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
    assert world.command(again).status == "done" and len(world.exchange_orders(0)) == 3


async def test_exit_an_account_then_the_run_closes_it(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=HEDGED)
    run_id = await entered(world)
    first = queue_exit(world, "account", "acct-1", run_id=run_id, account_id=world.account_ids[0])

    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
        assert world.command(first).status == "done"
        assert len(world.exchange_orders(0)) == 4 and len(world.exchange_orders(1)) == 2
        rows = world.executions(run_id)
        assert {e.account_id: e.status for e in rows if e.status == "exited"} == {
            world.account_ids[0]: "exited"
        }
        assert [e.status for e in rows if e.account_id == world.account_ids[1]] == ["active", "active"]
        assert world.run(run_id).status == "active"

        second = queue_exit(world, "run", "run-1", run_id=run_id)
        assert await exits.process_once() == 1
    assert world.command(second).status == "done"
    assert len(world.exchange_orders(1)) == 4
    rows = world.executions(run_id)
    assert {e.status for e in rows} == {"exited"}
    run = world.run(run_id)
    assert run.status == "closed" and run.ended_at is not None and run.exit_reason == "manual"
    assert run.final_pnl == sum((e.realized_pnl or Decimal(0)) for e in rows)
    for i in range(2):
        assert all(position(world, i, s) == 0 for s in world.leg_symbols)


@on_both_profiles
async def test_exit_of_a_run_buys_back_every_short_before_any_hedge_is_sold(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=IRON_CONDOR)
    run_id = await entered(world, quantity=130)
    entries = {i: len(world.exchange_orders(i)) for i in range(2)}
    command_id = queue_exit(world, "run", "exit-run", run_id=run_id)
    # The buy-backs of both shorts fill only half at first; the rest when the exchange clock moves on.
    for key in sim.api_keys[:2]:
        sim.control.partial_fill(2, 0.5, apikey=key)

    async with exits_of(world) as exits:
        exiting = asyncio.create_task(exits.process_once())

        async def buybacks_half_filled() -> bool:
            new = [o for i in range(2) for o in world.exchange_orders(i)[entries[i] :]]
            return len(new) == 4 and all(o.action == "BUY" and o.filled_quantity == 65 for o in new)

        await eventually_async(buybacks_half_filled, timeout=10, what="four half-filled buy-backs")
        for _ in range(20):  # no hedge may be sold while its account's shorts are open
            await asyncio.sleep(0.01)
            assert all(o.action == "BUY" for i in range(2) for o in world.exchange_orders(i)[entries[i] :])
        filled_at = sim.control.advance(5)
        assert await exiting == 1

    assert world.command(command_id).status == "done", world.command(command_id).error
    for i in range(2):
        exits_placed = world.exchange_orders(i)[entries[i] :]
        buybacks = [o for o in exits_placed if o.action == "BUY"]
        sales = [o for o in exits_placed if o.action == "SELL"]
        assert len(buybacks) == len(sales) == 2
        assert all(o.status == "complete" for o in exits_placed)
        # The exchange's own timestamps: both shorts were flat before either hedge was accepted.
        assert max(o.created for o in buybacks) < filled_at
        assert max(o.updated for o in buybacks) <= min(o.created for o in sales)
        assert max(o.orderid for o in buybacks) < min(o.orderid for o in sales)
        assert all(position(world, i, s) == 0 for s in world.leg_symbols)
    assert {e.status for e in world.executions(run_id)} == {"exited"}
    assert world.run(run_id).status == "closed"


async def test_two_exit_commands_for_one_run_at_once_place_one_set_of_exit_orders(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=HEDGED)
    run_id = await entered(world)
    first = queue_exit(world, "run", "click-1", run_id=run_id)
    second = queue_exit(world, "run", "click-2", run_id=run_id)
    everything = queue_exit(world, "all", "exit-all")

    async with exits_of(world) as one, exits_of(world) as two:
        claimed = await asyncio.gather(
            one.run_command(first),
            two.run_command(second),
            two.run_command(first),
            one.run_command(everything),
        )
    assert sum(int(c) for c in claimed) == 3
    for command_id in (first, second, everything):
        command = world.command(command_id)
        assert command.status == "done", command.error
    orders = world.all_exchange_orders()
    assert len(orders) == 8  # 4 entries + exactly one exit per open leg
    assert len(exit_intents(world)) == 4
    assert {e.status for e in world.executions(run_id)} == {"exited"}
    assert all(e.exit_retry_count == 1 for e in world.executions(run_id))
    assert world.run(run_id).status == "closed"
    for i in range(2):
        assert all(position(world, i, s) == 0 for s in world.leg_symbols)


async def test_an_exit_retried_after_the_engine_died_between_intent_and_send_sends_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("SELL", "25800PE"),))
    run_id = await entered(world)
    [short] = world.executions(run_id)
    command_id = queue_exit(world, "execution", "exit-1", execution_id=short.id)
    # What an engine that claimed the exit, recorded its intent and died before sending leaves behind.
    assert claim_exit(world.database, short.id, "manual", "exit of one leg") == 1
    assert claim_exit(world.database, short.id, "manual", "a second owner") is None
    world.record_intent(f"exec:{short.id}:exit:1:1", short.id, side="BUY", quantity=65, purpose="exit")
    with world.database.session() as session:
        command = session.get(EngineCommand, command_id)
        assert command is not None
        command.status = "running"

    async with exits_of(world) as restarted:
        assert restarted.recover() == 1
        assert await restarted.process_once() == 1

    assert world.command(command_id).status == "done"
    assert [(o.action, o.status) for o in world.exchange_orders(0)] == [
        ("SELL", "complete"),
        ("BUY", "complete"),
    ]
    assert exit_intents(world) == [(f"exec:{short.id}:exit:1:1", order_state.COMPLETE)]
    [short] = world.executions(run_id)
    assert short.status == "exited" and short.exited_quantity == 65
    assert world.run(run_id).status == "closed"


async def test_an_exit_reply_lost_after_the_exchange_accepted_is_resolved_by_tag(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("SELL", "25800PE"),))
    run_id = await entered(world)
    command_id = queue_exit(world, "run", "exit-run", run_id=run_id)
    sim.control.hang_next(1, seconds=2.5, execute=True, endpoint="placeorder", apikey=sim.api_keys[0])

    async with exits_of(world, order_timeout=0.5) as exits:
        assert await exits.process_once() == 1

    assert world.command(command_id).status == "done"
    _, buyback = world.exchange_orders(0)
    assert buyback.action == "BUY" and buyback.status == "complete"
    [intent] = [i for i in world.intents() if i.purpose == "exit"]
    assert intent.order_id == buyback.orderid and intent.state == order_state.COMPLETE
    assert "outcome unknown" in (intent.rejection_reason or "")
    [short] = world.executions(run_id)
    assert short.status == "exited" and short.exit_order_ids == [buyback.orderid]
    assert position(world, 0, short.symbol or "") == 0


async def test_a_short_whose_exit_fails_is_in_error_with_the_reason_and_its_hedge_open(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id = await entered(world)
    command_id = queue_exit(world, "run", "exit-run", run_id=run_id)
    sim.control.reject_next(1, "RMS: exit refused", apikey=sim.api_keys[0])

    # One attempt per round: the first rejection ends the round (the retry itself is in
    # test_engine_exit_retry.py).
    async with exits_of(world, retry=ExitRetry(attempts=1, first_wait=0.01)) as exits:
        assert await exits.process_once() == 1
        assert world.command(command_id).status == "done"
        hedge, short = world.executions(run_id)
        assert short.status == "error" and short.exited_quantity == 0 and short.exit_price is None
        assert "RMS: exit refused" in (short.error_message or "")
        assert "still open" in (short.error_message or "")
        assert hedge.status == "active" and "short leg" in (hedge.error_message or "")
        # Nothing reversed, the hedge not sold: the exchange holds the position as entered.
        assert [(o.action, o.status) for o in world.exchange_orders(0)[2:]] == [("BUY", "rejected")]
        assert position(world, 0, short.symbol or "") == -65 and position(world, 0, hedge.symbol or "") == 65
        assert world.run(run_id).status == "error"

        # The trader exits again (a person's exit retries the leg in error): attempt 2 with its own
        # keys, now both legs close.
        again = queue_exit(world, "run", "exit-run-2", run_id=run_id)
        assert await exits.process_once() == 1
    assert world.command(again).status == "done"
    hedge, short = world.executions(run_id)
    assert short.status == hedge.status == "exited"
    assert (f"exec:{short.id}:exit:2:1", order_state.COMPLETE) in exit_intents(world)
    assert (f"exec:{short.id}:exit:1:1", order_state.REJECTED) in exit_intents(world)
    assert position(world, 0, short.symbol or "") == 0 and position(world, 0, hedge.symbol or "") == 0
    assert world.run(run_id).status == "closed"


async def test_exit_requests_are_the_users_own_and_the_engine_has_the_component(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=(("SELL", "25800PE"),))
    run_id, _ = world.plan()
    [execution] = world.executions(run_id)
    with world.database.session() as session:
        other = make_user(session, "someone").id
    with world.database.session() as session, pytest.raises(LookupError):
        request_exit(session, user_id=other, scope="execution", token="x", execution_id=execution.id)
    with world.database.session() as session, pytest.raises(LookupError):
        request_exit(session, user_id=other, scope="run", token="x", run_id=run_id)
    with world.database.session() as session, pytest.raises(LookupError):
        request_exit(
            session, user_id=other, scope="account", token="x", run_id=run_id, account_id=world.account_ids[0]
        )
    with world.database.session() as session, pytest.raises(ValueError):
        request_exit(session, user_id=world.user_id, scope="run", token="y")

    service = build_engine(make_env(db_url, tmp_path).state.settings, world.database)
    [exits] = [c for c in service.components if c.name == "exits"]
    [entry] = [c for c in service.components if c.name == "execution"]
    assert isinstance(exits, ExitExecutor) and exits.registry is entry.registry  # type: ignore[attr-defined]
    command_id = queue_exit(world, "run", "tok", run_id=run_id)
    assert await exits.run_command(command_id) is False  # no lock taken: no epoch, nothing claimed
    assert world.command(command_id).status == "pending"
    await exits.registry.aclose()


@on_both_profiles
async def test_exit_all_cancels_a_working_entry_order_itself_and_verifies_it(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    with world.database.session() as session:
        leg = session.get(StrategyLeg, world.leg_ids[0])
        assert leg is not None
        # A stop entry far above the market: it rests "trigger pending", which cancelallorder leaves alive.
        leg.order_type, leg.trigger_price, leg.limit_price = "SL-LMT", Decimal(900), Decimal(905)
    run_id, entry_command = world.plan()
    async with executor_of(world, fill_timeout=0.3) as executor:
        assert await executor.process_once() == 1
    [resting] = world.exchange_orders(0)
    assert resting.status == "trigger pending"
    assert world.command(entry_command).status == "pending"  # retried: the order is still working

    command_id = queue_exit(world, "all", "exit-all")
    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
    [cancelled] = world.exchange_orders(0)
    assert cancelled.status == "cancelled"
    [intent] = world.intents()
    assert intent.state == order_state.CANCELLED
    [execution] = world.executions(run_id)
    assert execution.status == "failed"
    assert world.command(command_id).status == "pending"  # the run's entry still has to finish

    async with executor_of(world) as executor, exits_of(world) as exits:
        assert await executor.process_once() == 1
        assert await exits.process_once() == 1
    assert world.run(run_id).status == "failed"
    assert world.command(command_id).status == "done"
    assert len(world.exchange_orders(0)) == 1


async def test_an_exit_to_an_account_without_a_usable_key_is_given_up_after_its_attempts_with_an_alert(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=HEDGED)
    run_id = await entered(world)
    with world.database.session() as session:
        session.execute(update(TradingAccount).values(api_key_encrypted=None))
    command_id = queue_exit(world, "run", "exit-1", run_id=run_id)

    async with exits_of(world) as exits:
        for _ in range(exits.config.max_attempts):
            assert await exits.process_once() == 1
    # No order can reach the account: not an order of unknown outcome, so the command is not retried
    # for ever; it gives up, the legs stay open and say why, and a critical alert names the run.
    command = world.command(command_id)
    assert command.status == "failed" and "cannot be reached" in (command.error or "")
    rows = world.executions(run_id)
    assert {e.status for e in rows} == {"active"}
    assert all("no API key" in (e.error_message or "") for e in rows)
    with world.database.session_factory() as session:
        alerts = list(session.scalars(select(EngineAlert).where(EngineAlert.run_id == run_id)))
    assert [(a.kind, a.severity) for a in alerts] == [(COMMAND_FAILED_ALERT, "critical")]
    assert "gave up" in alerts[0].title


async def test_a_run_closed_by_a_person_after_a_rule_exited_most_of_it_keeps_the_rule_as_its_reason(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=3, legs=HEDGED)
    run_id = await entered(world)
    first, second, third = world.account_ids
    with world.database.session() as session:
        for account_id in (first, second):  # a per-account max loss on two accounts
            request_exit(
                session,
                user_id=world.user_id,
                scope="account",
                token=f"risk:{run_id}:{account_id}:max_loss",
                run_id=run_id,
                account_id=account_id,
                reason="max_loss",
            )
    async with exits_of(world) as exits:
        assert await exits.process_once() == 2
        person = queue_exit(world, "account", "acct-3", run_id=run_id, account_id=third)
        assert await exits.process_once() == 1
    assert world.command(person).status == "done"
    rows = world.executions(run_id)
    assert sorted(e.exit_reason or "" for e in rows) == ["manual"] * 2 + ["max_loss"] * 4
    run = world.run(run_id)
    # The person's exit closed the run; the run's reason is what exited most of it.
    assert (run.status, run.exit_reason) == ("closed", "max_loss")
    assert run.exit_reason_detail == (
        "4 of 6 legs exited for max_loss; the last exit: exit of an account (manual)"
    )
