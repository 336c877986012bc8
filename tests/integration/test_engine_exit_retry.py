"""The verified, capped retry of a failed exit (PRODUCT §6.7 step 6, §5.10) against the paper exchange
over loopback, on SQLite and PostgreSQL: a rejected exit is verified at the broker and retried once; a
filled exit whose reply was lost, or a working one, is never sent again; a failed verification read
sends nothing; five failures end in ``error`` with one critical alert; a person retries from ``error``
or confirms the leg closed outside; exit all records ``exit_all``; two causes racing during a retry
place one order per slice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from algomirror.db.models import EngineAlert, EngineCommand
from algomirror.domain import order_state
from algomirror.engine import entry_run
from algomirror.engine.exit_planning import request_exit, retry_exit
from algomirror.engine.exit_records import confirm_closed_outside
from algomirror.engine.exits import ExitExecutor, ExitRetry
from tests.factories import make_user
from tests.helpers import eventually_async
from tests.integration.execution_support import World, executor_of, make_world, nifty
from tests.sim_fixtures import SimHandle

HEDGED = (("BUY", "25500PE"), ("SELL", "25800PE"))
LOT = 65
SHORT = (("SELL", "25800PE"),)
# No real 10 s waits in tests: the same backoff, scaled down.
FAST = ExitRetry(attempts=5, first_wait=0.05, max_wait=0.2, verify_interval=0.05, verify_timeout=10.0)


@asynccontextmanager
async def exits_of(world: World, retry: ExitRetry = FAST, **options: Any) -> AsyncIterator[ExitExecutor]:
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


def queue_exit(world: World, scope: Any, token: str, **ids: Any) -> int:
    with world.database.session() as session:
        return request_exit(session, user_id=world.user_id, scope=scope, token=token, **ids).id


def position(world: World, account_index: int, symbol: str) -> int:
    account = world.sim.running.core.exchange.accounts[world.sim.api_keys[account_index]]
    return sum(p.quantity for p in account.positions.values() if p.contract.symbol == symbol)


def exit_intents(world: World) -> list[tuple[str, str]]:
    return [(i.key, i.state) for i in world.intents() if i.purpose == "exit"]


def exit_orders(world: World, entries: int) -> list[tuple[str, str]]:
    return [(o.action, o.status) for o in world.exchange_orders(0)[entries:]]


def commands(world: World, kind: str | None = None) -> list[EngineCommand]:
    with world.database.session_factory() as session:
        found = session.scalars(select(EngineCommand).order_by(EngineCommand.id))
        return [c for c in found if kind is None or c.kind == kind]


def alerts(world: World) -> list[EngineAlert]:
    with world.database.session_factory() as session:
        return list(session.scalars(select(EngineAlert).order_by(EngineAlert.id)))


async def test_a_rejected_exit_is_verified_then_retried_and_fills_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id = await entered(world)
    hedge, short = world.executions(run_id)
    command_id = queue_exit(world, "run", "exit-run", run_id=run_id)
    sim.control.reject_next(1, "RMS: exit refused", apikey=sim.api_keys[0])

    async with exits_of(world) as exits:
        assert await exits.process_once() == 1

    assert world.command(command_id).status == "done", world.command(command_id).error
    # One rejected buy-back, then exactly one filled buy-back for the slice, then the hedge sold.
    assert exit_orders(world, 2) == [("BUY", "rejected"), ("BUY", "complete"), ("SELL", "complete")]
    assert exit_intents(world) == [
        (f"exec:{short.id}:exit:1:1", order_state.REJECTED),
        (f"exec:{short.id}:exit:2:1", order_state.COMPLETE),
        (f"exec:{hedge.id}:exit:1:1", order_state.COMPLETE),
    ]
    hedge, short = world.executions(run_id)
    assert short.status == hedge.status == "exited"
    assert short.exit_retry_count == 2 and short.exited_quantity == 65 and short.error_message is None
    assert short.exit_order_ids is not None and len(short.exit_order_ids) == 2  # the rejected one kept
    assert position(world, 0, short.symbol or "") == 0 and position(world, 0, hedge.symbol or "") == 0
    assert world.run(run_id).status == "closed"
    assert alerts(world) == []


async def test_an_exit_filled_at_the_broker_whose_reply_was_lost_is_found_not_resent(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=SHORT)
    run_id = await entered(world)
    [short] = world.executions(run_id)
    command_id = queue_exit(world, "execution", "exit-1", execution_id=short.id)
    # The exchange fills the buy-back, the reply never arrives in time, and the driver's own orderbook
    # lookup fails: the attempt ends unresolved. Verification must find the fill, not send again.
    sim.control.hang_next(1, seconds=1.5, execute=True, endpoint="placeorder", apikey=sim.api_keys[0])
    sim.control.status_next(500, 8, endpoint="orderbook", apikey=sim.api_keys[0])

    async with exits_of(world, order_timeout=0.5, resolve_seconds=0.3, resolve_interval=0.1) as exits:
        assert await exits.process_once() == 1

    assert world.command(command_id).status == "done", world.command(command_id).error
    _, buyback = world.exchange_orders(0)
    assert len(world.exchange_orders(0)) == 2 and buyback.status == "complete"
    [intent] = [i for i in world.intents() if i.purpose == "exit"]
    assert intent.key == f"exec:{short.id}:exit:1:1" and intent.order_id == buyback.orderid
    assert intent.state == order_state.COMPLETE
    [short] = world.executions(run_id)
    assert short.status == "exited" and short.exit_retry_count == 1
    assert position(world, 0, short.symbol or "") == 0
    assert alerts(world) == []


async def test_a_working_exit_order_is_waited_for_and_nothing_else_is_sent(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=SHORT)
    run_id = await entered(world, quantity=130)  # two lots: half of it can fill
    [short] = world.executions(run_id)
    queue_exit(world, "execution", "exit-1", execution_id=short.id)
    sim.control.partial_fill(1, 0.5, apikey=sim.api_keys[0])  # half now, the rest when time moves on

    async with exits_of(world, fill_timeout=0.2) as exits:
        exiting = asyncio.create_task(exits.process_once())

        async def waiting() -> bool:
            [row] = world.executions(run_id)
            return "still working" in (row.error_message or "")

        await eventually_async(waiting, timeout=10, what="the owner waiting for its working order")
        for _ in range(10):  # several verification rounds: nothing more is sent
            await asyncio.sleep(0.05)
            assert exit_orders(world, 1) == [("BUY", "open")]
        [row] = world.executions(run_id)
        assert row.status == "exiting" and row.exit_retry_count == 1
        sim.control.advance(5)
        assert await exiting == 1

    assert exit_orders(world, 1) == [("BUY", "complete")]
    assert exit_intents(world) == [(f"exec:{short.id}:exit:1:1", order_state.COMPLETE)]
    [short] = world.executions(run_id)
    assert short.status == "exited" and short.exited_quantity == 130
    assert position(world, 0, short.symbol or "") == 0


async def test_a_failed_verification_read_sends_nothing_and_verifies_again(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=SHORT)
    run_id = await entered(world)
    [short] = world.executions(run_id)
    queue_exit(world, "execution", "exit-1", execution_id=short.id)
    sim.control.reject_next(1, "RMS: exit refused", apikey=sim.api_keys[0])
    sim.control.status_next(500, 1000, endpoint="positionbook", apikey=sim.api_keys[0])

    async with exits_of(world) as exits:
        exiting = asyncio.create_task(exits.process_once())

        async def cannot_verify() -> bool:
            [row] = world.executions(run_id)
            return "cannot verify" in (row.error_message or "")

        await eventually_async(cannot_verify, timeout=10, what="verification failing")
        for _ in range(10):
            await asyncio.sleep(0.05)
            assert exit_orders(world, 1) == [("BUY", "rejected")]  # no guess while the book is unreadable
        [row] = world.executions(run_id)
        assert row.status == "exiting" and row.exit_retry_count == 1
        sim.control.clear_faults()
        assert await exiting == 1

    assert exit_orders(world, 1) == [("BUY", "rejected"), ("BUY", "complete")]
    [short] = world.executions(run_id)
    assert short.status == "exited" and short.exit_retry_count == 2
    assert position(world, 0, short.symbol or "") == 0


async def test_five_rejections_end_in_error_with_one_alert_then_a_person_retries(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=SHORT)
    run_id = await entered(world)
    [short] = world.executions(run_id)
    first = queue_exit(world, "execution", "exit-1", execution_id=short.id)
    sim.control.reject_next(6, "RMS: exit refused", apikey=sim.api_keys[0])

    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
        assert world.command(first).status == "done"
        assert exit_orders(world, 1) == [("BUY", "rejected")] * 5  # no sixth order
        assert [k for k, _ in exit_intents(world)] == [f"exec:{short.id}:exit:{n}:1" for n in range(1, 6)]
        [short] = world.executions(run_id)
        assert short.status == "error" and short.exit_retry_count == 5
        assert "RMS: exit refused" in (short.error_message or "") and "5 attempt" in (
            short.error_message or ""
        )
        assert world.run(run_id).status == "error"
        [alert] = alerts(world)
        assert (alert.kind, alert.severity) == ("exit_failed", "critical")
        assert (alert.execution_id, alert.account_id, alert.run_id) == (
            short.id,
            world.account_ids[0],
            run_id,
        )
        assert short.symbol is not None and short.symbol in alert.title and "Paper 1" in alert.title
        assert "RMS: exit refused" in (alert.details or "")

        # A rule's exit (not a person) leaves a leg in error alone.
        rule = queue_exit(world, "run", "max-loss", run_id=run_id, reason="max_loss")
        assert await exits.process_once() == 1
        assert world.command(rule).status == "done"
        assert len(exit_orders(world, 1)) == 5 and world.executions(run_id)[0].status == "error"

        # The person retries: attempt 6 (a new round, new keys); the exchange's 6th rejection is used
        # up by it, so the round's next attempt fills.
        with world.database.session() as session:
            retried = retry_exit(session, user_id=world.user_id, execution_id=short.id, token="retry-1").id
        assert await exits.process_once() == 1
    assert world.command(retried).status == "done"
    assert exit_orders(world, 1) == [("BUY", "rejected")] * 6 + [("BUY", "complete")]
    [short] = world.executions(run_id)
    assert short.status == "exited" and short.exit_retry_count == 7 and short.exit_reason == "manual"
    assert (f"exec:{short.id}:exit:7:1", order_state.COMPLETE) in exit_intents(world)
    assert position(world, 0, short.symbol or "") == 0
    run = world.run(run_id)
    assert run.status == "closed" and run.final_pnl == short.realized_pnl
    assert len(alerts(world)) == 1


async def test_a_leg_in_error_confirmed_closed_outside_is_exited_with_its_pnl(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id = await entered(world)
    hedge, short = world.executions(run_id)
    queue_exit(world, "execution", "exit-1", execution_id=short.id)
    sim.control.reject_next(1, "RMS: exit refused", apikey=sim.api_keys[0])
    async with exits_of(world, retry=ExitRetry(attempts=1, first_wait=0.01)) as exits:
        assert await exits.process_once() == 1
    hedge, short = world.executions(run_id)
    assert short.status == "error" and world.run(run_id).status == "error"
    [alert] = alerts(world)
    assert "hedge(s) on this account stay open" in (alert.details or "") and hedge.symbol in (
        alert.details or ""
    )

    with world.database.session() as session:
        other = make_user(session, "someone").id
    price = Decimal("101.5")
    with world.database.session() as session, pytest.raises(LookupError):
        confirm_closed_outside(
            session, user_id=other, execution_id=short.id, price=price, now=world.clock.now()
        )
    with world.database.session() as session, pytest.raises(ValueError):
        confirm_closed_outside(
            session, user_id=world.user_id, execution_id=short.id, price=Decimal(0), now=world.clock.now()
        )
    with world.database.session() as session, pytest.raises(ValueError):  # not in error
        confirm_closed_outside(
            session, user_id=world.user_id, execution_id=hedge.id, price=price, now=world.clock.now()
        )
    with world.database.session() as session:
        confirm_closed_outside(
            session, user_id=world.user_id, execution_id=short.id, price=price, now=world.clock.now()
        )

    hedge, short = world.executions(run_id)
    assert short.status == "exited" and short.exit_reason == "closed_externally"
    assert short.exit_price == price and short.exited_quantity == 65 and short.exit_time is not None
    assert short.entry_price is not None
    assert short.realized_pnl == ((short.entry_price - price) * 65).quantize(Decimal("0.01"))
    assert len(world.exchange_orders(0)) == 3  # nothing sent for the confirmation
    assert world.run(run_id).status == "active"  # the hedge is still open, nothing in error
    # The hedge is exited normally; then the run closes with both legs' P&L.
    queue_exit(world, "run", "exit-run", run_id=run_id)
    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
    hedge, short = world.executions(run_id)
    run = world.run(run_id)
    assert hedge.status == "exited" and run.status == "closed"
    assert run.final_pnl == (hedge.realized_pnl or 0) + (short.realized_pnl or 0)


async def test_exit_all_records_the_exit_all_reason(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id = await entered(world)
    command_id = queue_exit(world, "all", "exit-all")
    assert world.command(command_id).payload["reason"] == "exit_all"

    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
    assert world.command(command_id).status == "done"
    rows = world.executions(run_id)
    assert {(e.status, e.exit_reason, e.exit_reason_detail) for e in rows} == {
        ("exited", "exit_all", "exit all")
    }
    run = world.run(run_id)
    assert run.status == "closed" and run.exit_reason == "exit_all"


async def test_two_causes_racing_during_a_retry_place_one_order_per_slice(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=SHORT)
    run_id = await entered(world)
    [short] = world.executions(run_id)
    manual = queue_exit(world, "run", "click", run_id=run_id)
    rule = queue_exit(world, "execution", "max-loss", execution_id=short.id, reason="max_loss")
    everything = queue_exit(world, "all", "exit-all")
    sim.control.reject_next(1, "RMS: exit refused", apikey=sim.api_keys[0])
    slow = ExitRetry(attempts=5, first_wait=0.5, max_wait=0.5, verify_interval=0.05, verify_timeout=10.0)

    async with exits_of(world, retry=slow) as one, exits_of(world, retry=slow) as two:
        owner = asyncio.create_task(one.run_command(manual))

        async def attempt_one_failed() -> bool:
            return exit_intents(world) == [(f"exec:{short.id}:exit:1:1", order_state.REJECTED)]

        await eventually_async(attempt_one_failed, timeout=10, what="attempt 1 rejected")
        # While the owner waits to verify, two more causes arrive, one on another executor (its own
        # run locks): both find the leg exiting, and at most one of all three may start attempt 2.
        claimed = await asyncio.gather(two.run_command(rule), one.run_command(everything), owner)
    assert all(claimed)
    for command_id in (manual, rule, everything):
        command = world.command(command_id)
        assert command.status == "done", command.error
    assert exit_intents(world) == [
        (f"exec:{short.id}:exit:1:1", order_state.REJECTED),
        (f"exec:{short.id}:exit:2:1", order_state.COMPLETE),
    ]
    assert exit_orders(world, 1) == [("BUY", "rejected"), ("BUY", "complete")]
    [short] = world.executions(run_id)
    assert short.status == "exited" and short.exited_quantity == 65 and short.exit_retry_count == 2
    assert short.exit_reason == "manual"  # the owner's cause; the others were no-ops
    assert position(world, 0, short.symbol or "") == 0
    assert world.run(run_id).status == "closed"


async def test_a_leg_that_cannot_be_verified_in_time_is_in_error_and_nothing_is_guessed(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=SHORT)
    run_id = await entered(world)
    queue_exit(world, "run", "exit-run", run_id=run_id)
    sim.control.reject_next(1, "RMS: exit refused", apikey=sim.api_keys[0])
    sim.control.status_next(500, 1000, endpoint="positionbook", apikey=sim.api_keys[0])
    impatient = ExitRetry(attempts=5, first_wait=0.01, verify_interval=0.05, verify_timeout=0.5)

    async with exits_of(world, retry=impatient) as exits:
        assert await exits.process_once() == 1

    assert exit_orders(world, 1) == [("BUY", "rejected")]
    [short] = world.executions(run_id)
    message = short.error_message or ""
    assert short.status == "error" and "cannot be established" in message and "RMS: exit refused" in message
    [alert] = alerts(world)
    assert alert.severity == "critical" and alert.execution_id == short.id
    assert world.run(run_id).status == "error"


def plan_refused_unwind(world: World, monkeypatch: pytest.MonkeyPatch, *, refusals: int) -> tuple[int, int]:
    """Plan a hedged run whose short is refused (no such contract), so the filled hedge is unwound, and
    whose unwind's sales the exchange refuses ``refusals`` times: the fault is armed as the unwind claims
    the hedge, after the entry's orders. Returns (run id, entry command id)."""
    original = vars(entry_run)["claim_unwind"]

    def claim_then_refuse(database: Any, execution_id: int) -> bool:
        world.sim.control.reject_next(refusals, "RMS: unwind refused", apikey=world.sim.api_keys[0])
        return bool(original(database, execution_id))

    monkeypatch.setattr(entry_run, "claim_unwind", claim_then_refuse)
    return world.plan({(1, 0): nifty("25810PE")})


async def test_an_unwind_refused_by_the_broker_is_retried_by_the_exit_function_and_closes_once(
    db_url: str, simulator_session: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id, entry_command = plan_refused_unwind(world, monkeypatch, refusals=1)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    hedge, short = world.executions(run_id)
    assert short.status == "failed"
    assert hedge.status == "error" and "RMS: unwind refused" in (hedge.error_message or "")
    assert world.run(run_id).status == "error"
    assert world.command(entry_command).status == "done"
    [handed] = [c for c in commands(world) if c.kind == "exit"]
    assert handed.token == f"unwind:{run_id}:{world.account_ids[0]}"
    assert handed.payload["reason"] == "entry_unwind" and handed.payload["retry_errors"] is True

    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
    assert world.command(handed.id).status == "done", world.command(handed.id).error
    # The refused sale, then one sale after the broker showed the hedge still held: nothing else.
    assert [(o.action, o.status) for o in world.exchange_orders(0)] == [
        ("BUY", "complete"),
        ("SELL", "rejected"),
        ("SELL", "complete"),
    ]
    hedge, short = world.executions(run_id)
    assert hedge.status == "exited" and hedge.exit_reason == "entry_unwind" and hedge.exited_quantity == 65
    assert position(world, 0, hedge.symbol or "") == 0
    run = world.run(run_id)
    assert (run.status, run.exit_reason) == ("closed", "entry_unwind")
    assert run.final_pnl == hedge.realized_pnl


async def test_an_unwind_whose_retries_all_fail_ends_in_error_with_an_alert_and_is_handed_over_once(
    db_url: str, simulator_session: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id, _ = plan_refused_unwind(world, monkeypatch, refusals=6)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
    # The unwind's one sale and the exit function's round of five: six refused, no seventh.
    assert [(o.action, o.status) for o in world.exchange_orders(0)] == [("BUY", "complete")] + [
        ("SELL", "rejected")
    ] * 6
    hedge, _short = world.executions(run_id)
    assert hedge.status == "error" and position(world, 0, hedge.symbol or "") == 65
    assert world.run(run_id).status == "error"
    [alert] = alerts(world)
    assert (alert.kind, alert.severity, alert.execution_id) == ("exit_failed", "critical", hedge.id)
    assert len([c for c in commands(world) if c.kind == "exit"]) == 1


async def test_a_short_whose_unwind_was_refused_keeps_its_hedge_across_entry_attempts_until_bought_back(
    db_url: str, simulator_session: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The account's third leg is refused (no such contract): its filled short is bought back first, and
    # that buy-back is refused, so the short is in error and the hedge must stay. The engine stops (a
    # database error here) after that, before the unwind is handed over: the entry's next attempt must
    # neither sell the hedge (all its held shorts look closed) nor leave the short with nothing driving it.
    sim = simulator_session
    world = make_world(
        db_url, sim, accounts=1, legs=(("BUY", "25500PE"), ("SELL", "25800PE"), ("SELL", "26200CE"))
    )
    original = vars(entry_run)["claim_unwind"]
    armed = [1]  # the first buy-back only: a wrong later sale of the hedge would go through

    def claim_then_refuse(database: Any, execution_id: int) -> bool:
        if armed:
            armed.pop()
            sim.control.reject_next(1, "RMS: unwind refused", apikey=sim.api_keys[0])
        return bool(original(database, execution_id))

    monkeypatch.setattr(entry_run, "claim_unwind", claim_then_refuse)
    hand_over = entry_run.RunEntry._hand_over_unwind

    def stopped(self: Any, account_id: int) -> None:
        raise OperationalError("INSERT INTO engine_commands", {}, Exception("database is locked"))

    monkeypatch.setattr(entry_run.RunEntry, "_hand_over_unwind", stopped)
    run_id, _ = world.plan({(2, 0): nifty("26210CE")})
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
        hedge, short, refused = world.executions(run_id)
        assert (hedge.status, short.status, refused.status) == ("active", "error", "failed")
        assert world.run(run_id).status == "entering" and commands(world, "exit") == []

        monkeypatch.setattr(entry_run.RunEntry, "_hand_over_unwind", hand_over)
        await executor.execute_run(run_id, user_id=world.user_id)  # the next attempt
    entry_orders = [("BUY", "complete"), ("SELL", "complete")]
    assert [(o.action, o.status) for o in world.exchange_orders(0)] == [*entry_orders, ("BUY", "rejected")]
    hedge, short, _ = world.executions(run_id)
    assert hedge.status == "active" and "hedge kept open" in (hedge.error_message or "")
    assert position(world, 0, hedge.symbol or "") == LOT and position(world, 0, short.symbol or "") == -LOT
    assert short.status == "error" and world.run(run_id).status == "error"
    [handed] = commands(world, "exit")
    assert handed.token == f"unwind:{run_id}:{world.account_ids[0]}"

    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
    assert world.command(handed.id).status == "done", world.command(handed.id).error
    # The short bought back (verified first), and only then its hedge sold.
    assert [(o.symbol, o.action, o.status) for o in world.exchange_orders(0)[2:]] == [
        (short.symbol, "BUY", "rejected"),
        (short.symbol, "BUY", "complete"),
        (hedge.symbol, "SELL", "complete"),
    ]
    hedge, short, _ = world.executions(run_id)
    assert hedge.status == short.status == "exited"
    assert position(world, 0, short.symbol or "") == 0 and position(world, 0, hedge.symbol or "") == 0
    assert world.run(run_id).status == "closed"


async def test_the_square_off_retries_a_leg_in_error_verified_first_and_closes_the_run(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id = await entered(world)
    sim.control.reject_next(5, "RMS: exit refused", apikey=sim.api_keys[0])
    rule = queue_exit(world, "run", "max-loss", run_id=run_id, reason="max_loss")
    async with exits_of(world) as exits:
        assert await exits.process_once() == 1
        assert world.command(rule).status == "done"
        hedge, short = world.executions(run_id)
        assert (short.status, hedge.status) == ("error", "active")  # the hedge kept for its short
        # The scheduler's square-off command (PRODUCT §6.10), as scheduler.Scheduler queues it.
        with world.database.session() as session:
            square = request_exit(
                session,
                user_id=world.user_id,
                scope="run",
                run_id=run_id,
                token="sched-square-off",
                reason="square_off",
                retry_errors=True,
            ).id
        assert await exits.process_once() == 1
    assert world.command(square).status == "done", world.command(square).error
    assert exit_orders(world, 2) == [("BUY", "rejected")] * 5 + [("BUY", "complete"), ("SELL", "complete")]
    hedge, short = world.executions(run_id)
    assert short.status == hedge.status == "exited"
    assert short.exit_reason == hedge.exit_reason == "square_off" and short.exit_retry_count == 6
    assert position(world, 0, short.symbol or "") == 0 and position(world, 0, hedge.symbol or "") == 0
    run = world.run(run_id)
    assert (run.status, run.exit_reason) == ("closed", "square_off")
