"""Review regressions (issue 11): an exit order of ours that is still working after the leg went to
``error`` — a person's retry verifies at the broker first and never sends over it (a short never
becomes a long), "closed outside" is refused while it may fill, and a retry when the broker shows
nothing of ours left sends nothing. Paper exchange over loopback, SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from algomirror.engine.exit_planning import retry_exit
from algomirror.engine.exit_records import ExitOrderWorkingError, confirm_closed_outside
from algomirror.engine.exits import ExitRetry
from tests.helpers import eventually_async
from tests.integration.execution_support import make_world
from tests.integration.test_engine_exit_retry import (
    SHORT,
    entered,
    exit_orders,
    exits_of,
    position,
    queue_exit,
)
from tests.sim_fixtures import SimHandle

IMPATIENT = ExitRetry(attempts=5, first_wait=0.01, verify_interval=0.05, verify_timeout=0.5)


async def test_retry_from_error_while_our_exit_works_sends_nothing_and_never_reverses(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=SHORT)
    run_id = await entered(world, quantity=130)
    [short] = world.executions(run_id)
    symbol = short.symbol or ""
    queue_exit(world, "execution", "exit-1", execution_id=short.id)
    sim.control.partial_fill(1, 0.5, apikey=sim.api_keys[0])  # half fills, the rest keeps working
    async with exits_of(world, retry=IMPATIENT, fill_timeout=0.2) as exits:
        assert await exits.process_once() == 1
    [row] = world.executions(run_id)
    assert row.status == "error" and "cannot be established" in (row.error_message or "")
    assert exit_orders(world, 1) == [("BUY", "open")]
    [working] = world.exchange_orders(0)[1:]

    # Closed outside is refused while that order may still fill, naming it; nothing is written.
    with world.database.session() as session, pytest.raises(ExitOrderWorkingError, match=working.orderid):
        confirm_closed_outside(
            session, user_id=world.user_id, execution_id=short.id, price=Decimal("100"), now=world.clock.now()
        )
    assert world.executions(run_id)[0].status == "error"

    # A person's retry (attempt 6) verifies first: our order still works, so nothing is sent.
    with world.database.session() as session:
        retry_exit(session, user_id=world.user_id, execution_id=short.id, token="retry-1")
    async with exits_of(world, retry=IMPATIENT, fill_timeout=0.2) as exits:
        await exits.process_once()
    assert exit_orders(world, 1) == [("BUY", "open")]  # no second BUY
    assert position(world, 0, symbol) == -65
    [row] = world.executions(run_id)
    assert row.status == "error" and "still working" in (row.error_message or "")

    # The first order fills; a retry now finds our fills cover the leg: exited, still nothing sent.
    sim.control.advance(5)

    async def filled() -> bool:
        return exit_orders(world, 1) == [("BUY", "complete")]

    await eventually_async(filled, timeout=10, what="the working exit order filling")
    with world.database.session() as session:
        retry_exit(session, user_id=world.user_id, execution_id=short.id, token="retry-2")
    async with exits_of(world, retry=IMPATIENT, fill_timeout=0.2) as exits:
        await exits.process_once()
    assert exit_orders(world, 1) == [("BUY", "complete")]
    assert position(world, 0, symbol) == 0
    [row] = world.executions(run_id)
    assert row.status == "exited" and row.exited_quantity == 130 and row.exit_time is not None


async def test_retry_when_the_broker_shows_nothing_of_ours_left_sends_nothing(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=SHORT)
    run_id = await entered(world)
    [short] = world.executions(run_id)
    symbol = short.symbol or ""
    queue_exit(world, "execution", "exit-1", execution_id=short.id)
    sim.control.reject_next(1, "RMS: exit refused", apikey=sim.api_keys[0])
    async with exits_of(world, retry=ExitRetry(attempts=1, first_wait=0.01)) as exits:
        assert await exits.process_once() == 1
    assert world.executions(run_id)[0].status == "error"
    # Closed outside AlgoMirror (an untagged order): the broker's net shows the leg flat.
    account = world.sim.running.core.exchange.accounts[sim.api_keys[0]]
    for p in account.positions.values():
        if p.contract.symbol == symbol:
            p.quantity = 0
    assert position(world, 0, symbol) == 0
    orders = len(world.exchange_orders(0))

    with world.database.session() as session:
        retry_exit(session, user_id=world.user_id, execution_id=short.id, token="retry-1")
    async with exits_of(world, retry=IMPATIENT) as exits:
        await exits.process_once()
    assert len(world.exchange_orders(0)) == orders  # nothing sent
    assert position(world, 0, symbol) == 0
    [row] = world.executions(run_id)
    assert row.status == "error" and "nothing of ours left" in (row.error_message or "")
