"""Exits of one run on different accounts do not wait for each other (reliability finding 6), and
the commands an executor runs are its own while they run.

Each account's exit is one owner's at a time (its shorts before its hedges), but a command on one
account — a person's retry of one leg, say — goes ahead while another account's exit of the same run
is held up at its broker. The paper exchange holds one account's order reply; the other account's exit
of the same run must finish meanwhile. The same holds for an exit of the whole run (a run-wide risk
breach): it exits the accounts nobody else is exiting at once, and a held account after its own exit.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from algomirror.db.models import EngineCommand, StrategyRun
from algomirror.domain import order_state
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.exits import ExitRetry
from tests.integration.execution_support import World
from tests.integration.risk_fault_support import QTY, entered, straddle_world, until
from tests.sim_fixtures import SimHandle

HELD_SECONDS = 6.0  # the first account's exit reply is held this long (the test's window)


def token_status(world: World, token: str) -> str:
    with world.database.session_factory() as session:
        status = session.scalar(select(EngineCommand.status).where(EngineCommand.token == token))
    assert status is not None
    return status


def breach(world: World, run_id: int) -> None:
    """A run-wide max-loss breach's exit command (scope run, token ``risk:run``)."""
    with world.database.session() as session:
        request_exit(
            session, user_id=world.user_id, scope="run", token="risk:run", run_id=run_id, reason="max_loss"
        )


def each_short_bought_back_once(world: World, accounts: int) -> None:
    """One buy-back of each short on each of the first ``accounts`` accounts at the exchange, never two."""
    for index in range(accounts):
        buys = sorted(o.symbol for o in world.exchange_orders(index) if o.action == "BUY")
        assert buys == sorted(world.leg_symbols), index


def exit_of_leg(world: World, execution_id: int, token: str) -> None:
    with world.database.session() as session:
        request_exit(
            session, user_id=world.user_id, scope="execution", token=token, execution_id=execution_id
        )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_exit_held_up_on_one_account_does_not_hold_up_another_accounts_exit_of_the_same_run(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=2)
    run_id = await entered(world)
    calls = {
        e.account_id: e.id for e in world.executions(run_id) if e.leg_id == world.leg_ids[0]
    }  # the short call on each account
    first, second = (calls[a] for a in world.account_ids)
    retry = ExitRetry(attempts=5, first_wait=0.05, verify_interval=0.05, verify_timeout=5.0)
    exits, registry = world.exit_executor(retry, order_timeout=30.0)
    # The first account's buy-back is placed, its reply held: that exit owns its account meanwhile.
    sim.control.hang_next(1, seconds=HELD_SECONDS, endpoint="placeorder", apikey=sim.api_keys[0])
    try:
        exit_of_leg(world, first, "exit-first")
        held = asyncio.create_task(exits.process_once())

        def first_sent() -> bool:
            return any(
                i.key.startswith(f"exec:{first}:exit:") and i.state == order_state.SENT
                for i in world.intents()
            )

        await until(first_sent, "the first account's exit was sent")
        exit_of_leg(world, second, "exit-second")
        other = asyncio.create_task(exits.process_once())

        def second_done_first_held() -> bool:
            status = {e.id: e.status for e in world.executions(run_id)}
            assert status[first] == "exiting", "the held exit ended before the other account's"
            return status[second] == "exited"

        # Well inside the held reply: under one lock per run the second exit would wait for the first.
        await until(second_done_first_held, "the second account's exit, while the first is held", timeout=4.0)
        assert await other == 1
        assert await held == 1
    finally:
        await registry.aclose()
    rows = {e.id: e for e in world.executions(run_id)}
    assert (rows[first].status, rows[first].exited_quantity) == ("exited", QTY)
    assert (rows[second].status, rows[second].exited_quantity) == ("exited", QTY)
    for index in (0, 1):  # one buy-back of the call on each account, never two
        buys = [o for o in world.exchange_orders(index) if o.action == "BUY"]
        assert [o.symbol for o in buys] == [world.leg_symbols[0]]


async def test_a_run_exit_does_not_wait_for_an_account_exit_held_up_at_its_broker(
    db_url: str, simulator_session: SimHandle
) -> None:
    # A run-wide breach (max loss) comes while one account's own exit (its kill switch, say) is held up
    # at its broker: the run's other account is exited meanwhile, not after the held exit; the held
    # account is the run exit's to finish once its own exit is done, and every short is bought back once.
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=2)
    run_id = await entered(world)
    first_account, second_account = world.account_ids
    retry = ExitRetry(attempts=5, first_wait=0.05, verify_interval=0.05, verify_timeout=5.0)
    exits, registry = world.exit_executor(retry, order_timeout=30.0)
    sim.control.hang_next(1, seconds=HELD_SECONDS, endpoint="placeorder", apikey=sim.api_keys[0])
    try:
        with world.database.session() as session:
            request_exit(
                session,
                user_id=world.user_id,
                scope="account",
                token="exit-account",
                run_id=run_id,
                account_id=first_account,
            )
        held = asyncio.create_task(exits.process_once())

        def first_sent() -> bool:
            return any(
                i.account_id == first_account and i.purpose == "exit" and i.state == order_state.SENT
                for i in world.intents()
            )

        await until(first_sent, "the first account's exit was sent and one reply is held")
        breach(world, run_id)
        run_exit = asyncio.create_task(exits.process_once())

        def second_done_first_held() -> bool:
            rows = world.executions(run_id)
            assert "exiting" in {e.status for e in rows if e.account_id == first_account}, "held exit ended"
            return {e.status for e in rows if e.account_id == second_account} == {"exited"}

        # Well inside the held reply: with the run exit waiting for the account's, this times out.
        await until(second_done_first_held, "the other account exited while the first is held", timeout=4.0)
        assert await held == 1
        assert await run_exit == 1
        # The closed run's account locks are dropped once idle: a long-lived engine does not keep them.
        assert [key for key in exits._account_locks if key[0] == run_id] == []
    finally:
        await registry.aclose()
    assert token_status(world, "exit-account") == "done"
    assert token_status(world, "risk:run") == "done"
    rows = world.executions(run_id)
    assert {(e.status, e.exited_quantity) for e in rows} == {("exited", QTY)}
    with world.database.session_factory() as session:
        run = session.get(StrategyRun, run_id)
        assert run is not None and run.status == "closed"
    each_short_bought_back_once(world, 2)
    second_rows = [e for e in rows if e.account_id == second_account]
    assert {e.exit_reason for e in second_rows} == {"max_loss"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_busy_account_of_a_run_exit_goes_as_soon_as_its_holder_is_done_not_after_the_others(
    db_url: str, simulator_session: SimHandle
) -> None:
    # Account 1: a person's exit of its call is held 2 s at the broker when the run exit comes, so the
    # run exit leaves account 1 for after it. Account 3's buy-backs are held 10 s. Account 1's put must
    # go once the person's exit is done (about 2 s), not once account 3 is (10 s).
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=3)
    run_id = await entered(world)
    first, _, third = world.account_ids
    call = next(
        e.id for e in world.executions(run_id) if e.account_id == first and e.leg_id == world.leg_ids[0]
    )
    retry = ExitRetry(attempts=5, first_wait=0.05, verify_interval=0.05, verify_timeout=5.0)
    exits, registry = world.exit_executor(retry, order_timeout=30.0)
    sim.control.hang_next(1, seconds=2.0, endpoint="placeorder", apikey=sim.api_keys[0])
    try:
        exit_of_leg(world, call, "exit-call")
        person = asyncio.create_task(exits.process_once())

        def call_sent() -> bool:
            return any(i.execution_id == call and i.state == order_state.SENT for i in world.intents())

        await until(call_sent, "the person's exit of the call was sent and its reply is held")
        sim.control.hang_next(2, seconds=10.0, endpoint="placeorder", apikey=sim.api_keys[2])
        breach(world, run_id)
        run_exit = asyncio.create_task(exits.process_once())

        def first_done_third_held() -> bool:
            rows = world.executions(run_id)
            assert "exiting" in {e.status for e in rows if e.account_id == third}, "account 3 was not held"
            return {e.status for e in rows if e.account_id == first} == {"exited"}

        await until(first_done_third_held, "account 1 exited while account 3 is held", timeout=7.0)
        assert await person == 1
        assert await run_exit == 1
    finally:
        await registry.aclose()
    assert {e.status for e in world.executions(run_id)} == {"exited"}
    each_short_bought_back_once(world, 3)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_recovery_after_a_component_restart_leaves_the_commands_this_process_runs_alone(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=1)
    run_id = await entered(world)
    call = next(e.id for e in world.executions(run_id) if e.leg_id == world.leg_ids[0])
    retry = ExitRetry(attempts=5, first_wait=0.05, verify_interval=0.05, verify_timeout=5.0)
    exits, registry = world.exit_executor(retry, order_timeout=30.0)
    sim.control.hang_next(1, seconds=HELD_SECONDS, endpoint="placeorder", apikey=sim.api_keys[0])
    try:
        exit_of_leg(world, call, "exit-held")
        held = asyncio.create_task(exits.process_once())

        def sent() -> bool:
            return any(
                i.key.startswith(f"exec:{call}:exit:") and i.state == order_state.SENT
                for i in world.intents()
            )

        await until(sent, "the exit was sent and its reply is held")
        # A supervised restart of the component runs its recovery while the command is in flight
        # here: it is not a dead engine's, so it is not returned to pending (a second copy would run).
        assert await asyncio.to_thread(exits.recover) == 0
        assert token_status(world, "exit-held") == "running"
        assert await held == 1
    finally:
        await registry.aclose()
    assert token_status(world, "exit-held") == "done"
    assert [o.symbol for o in world.exchange_orders(0) if o.action == "BUY"] == [world.leg_symbols[0]]
