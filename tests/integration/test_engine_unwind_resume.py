"""An entry unwind an earlier attempt began goes on, on the paper exchange over loopback (SQLite and
PostgreSQL): the account's failed leg was the part-filled short, which the unwind then took itself
(``exiting``, ``error`` or ``exited``), so no leg of the account reads ``failed`` any more. The entry's
next attempt must still follow the buy-back, hand a refused one over to the exit function, and sell the
hedge once the short is flat. The earlier attempt is either real (a buy-back still working when the
attempt ended) or its leftovers written as an engine killed at that point would leave them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from algomirror.db.models import EngineCommand, Strategy, StrategyExecution, StrategyRun
from tests.integration.execution_support import World, executor_of, make_world
from tests.sim_fixtures import SimHandle

HEDGED = (("BUY", "25500PE"), ("SELL", "25800PE"))
LOT = 65


async def part_filled_short(world: World) -> tuple[int, int, int]:
    """A hedged run entered on one account, then made to look as if its short had filled 65 of 130
    while the run still enters (the rest cancelled): the account's failed leg is the short itself.
    Returns (run id, hedge execution id, short execution id)."""
    run_id, _ = world.plan(quantity=LOT)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    hedge, short = world.executions(run_id)
    with world.database.session() as session:
        session.execute(update(StrategyRun).where(StrategyRun.id == run_id).values(status="entering"))
        session.execute(
            update(StrategyExecution).where(StrategyExecution.id == short.id).values(planned_quantity=2 * LOT)
        )
    return run_id, hedge.id, short.id


def set_execution(world: World, execution_id: int, **values: Any) -> None:
    with world.database.session() as session:
        session.execute(
            update(StrategyExecution).where(StrategyExecution.id == execution_id).values(**values)
        )


def exit_commands(world: World) -> list[EngineCommand]:
    with world.database.session_factory() as session:
        return list(session.scalars(select(EngineCommand).where(EngineCommand.kind == "exit")))


def position(world: World, symbol: str) -> int:
    account = world.sim.running.core.exchange.accounts[world.sim.api_keys[0]]
    return sum(p.quantity for p in account.positions.values() if p.contract.symbol == symbol)


async def test_a_buy_back_still_working_when_the_attempt_ended_is_followed_by_the_next_one(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=HEDGED)
    run_id, _ = world.plan(quantity=2 * LOT)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    hedge, short = world.executions(run_id)
    with world.database.session() as session:
        session.execute(update(StrategyRun).where(StrategyRun.id == run_id).values(status="entering"))
    set_execution(world, short.id, planned_quantity=3 * LOT)  # 130 of 195 filled: the failed leg
    sim.control.partial_fill(1, 0.5, apikey=sim.api_keys[0])  # the buy-back fills half, the rest later
    async with executor_of(world, fill_timeout=0.3) as executor:
        await executor.execute_run(run_id, user_id=world.user_id)
        assert {e.id: e.status for e in world.executions(run_id)}[short.id] == "exiting"
        assert position(world, hedge.symbol or "") == 2 * LOT  # the hedge waits for its short
        sim.control.advance(5)  # the buy-back completes at the broker
        await executor.execute_run(run_id, user_id=world.user_id)
    hedge, short = world.executions(run_id)
    assert (short.status, short.exited_quantity) == ("exited", 2 * LOT)
    assert (hedge.status, hedge.exited_quantity) == ("exited", 2 * LOT)
    assert position(world, short.symbol or "") == 0 and position(world, hedge.symbol or "") == 0
    # One buy-back order, followed to its end; one sale of the hedge.
    buys = [o for o in world.exchange_orders(0) if o.symbol == short.symbol and o.action == "BUY"]
    sells = [o for o in world.exchange_orders(0) if o.symbol == hedge.symbol and o.action == "SELL"]
    assert [o.status for o in buys] == ["complete"] and [o.status for o in sells] == ["complete"]
    assert world.run(run_id).status == "closed"


async def test_a_short_left_in_error_by_a_stopped_attempt_is_handed_over_and_keeps_its_hedge(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=HEDGED)
    run_id, hedge_id, short_id = await part_filled_short(world)
    set_execution(world, short_id, status="error", exit_retry_count=1)  # its buy-back refused, then a stop
    orders = len(world.exchange_orders(0))
    async with executor_of(world) as executor:
        await executor.execute_run(run_id, user_id=world.user_id)
    [handed] = exit_commands(world)
    assert handed.token == f"unwind:{run_id}:{world.account_ids[0]}"
    assert len(world.exchange_orders(0)) == orders  # nothing sold: the hedge covers a short still open
    rows = {e.id: e for e in world.executions(run_id)}
    assert rows[hedge_id].status == "active" and "hedge kept open" in (rows[hedge_id].error_message or "")


@pytest.mark.parametrize("policy_now", ["unwind", "keep"])
async def test_a_hedge_whose_short_was_bought_back_before_a_stop_is_sold_by_the_next_attempt(
    db_url: str, simulator_session: SimHandle, policy_now: str
) -> None:
    """Also when a person switched the strategy to ``keep`` after the unwind began: a begun unwind is
    finished (the next attempt reads the policy afresh), else the run would stay entering for ever."""
    world = make_world(db_url, simulator_session, accounts=1, legs=HEDGED)
    run_id, hedge_id, short_id = await part_filled_short(world)
    # The stopped attempt bought the short back (in full, at the exchange too), not yet the hedge.
    short = {e.id: e for e in world.executions(run_id)}[short_id]
    bought = httpx.post(
        f"{world.sim.api_url}/placeorder",
        json={
            "apikey": world.sim.api_keys[0],
            "strategy": "test",
            "symbol": short.symbol,
            "action": "BUY",
            "exchange": "NFO",
            "pricetype": "MARKET",
            "product": "NRML",
            "quantity": str(LOT),
        },
        timeout=10,
    )
    assert bought.status_code == 200, bought.text
    assert position(world, short.symbol or "") == 0
    set_execution(world, short_id, status="exited", exited_quantity=LOT, exit_reason="entry_unwind")
    with world.database.session() as session:
        session.execute(
            update(Strategy).where(Strategy.id == world.strategy_id).values(on_leg_failure=policy_now)
        )
    async with executor_of(world) as executor:
        await executor.execute_run(run_id, user_id=world.user_id)
    rows = {e.id: e for e in world.executions(run_id)}
    assert rows[hedge_id].status == "exited" and rows[hedge_id].exit_reason == "entry_unwind"
    assert position(world, rows[hedge_id].symbol or "") == 0
    assert world.run(run_id).status == "closed"
