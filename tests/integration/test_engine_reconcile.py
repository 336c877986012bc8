"""Restart recovery and reconciliation (PRODUCT §6.8) against the paper exchange over loopback, on SQLite
and PostgreSQL: matching books change nothing, a failed read is *unverified* (never flat), a position
closed outside or extra manual quantity or an untracked tagged order halts the account's entries and
raises an alert, and the entry path refuses a halted account until a person resumes it."""

from __future__ import annotations

from algomirror.engine.halts import halt_account_entries, resume_account_entries
from tests.integration.execution_support import executor_of, make_world
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
