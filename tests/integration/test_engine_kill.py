"""``algomirror engine`` killed with a real ``kill -9`` between intent and acknowledgement (issue 11), on
SQLite and PostgreSQL: restarted, it resumes the run, and the orders counted at the exchange are exactly one
per intent.

The paper exchange runs in this process (a server thread on loopback); the engine is a real subprocess on
the same database. The exchange holds the replies to the first few ``placeorder`` calls for a minute (the
order is placed at once, its acknowledgement never arrives in time), so the test can wait, from the
database and the exchange's own books, until those intents are ``sent`` and their orders exist, and kill
the engine right there. Every wait is a poll with a deadline.
"""

from __future__ import annotations

from pathlib import Path

from algomirror.domain import order_state
from algomirror.engine.exit_planning import request_exit
from tests.helpers import eventually
from tests.integration.engine_proc_support import engines, kill_9, rekey
from tests.integration.execution_support import IRON_CONDOR, World, executor_of, make_world
from tests.sim_fixtures import SimHandle

HUNG_SECONDS = 90.0  # far longer than the test: a held reply never reaches the killed engine
POLL = 0.05


def one_order_per_intent(world: World, purpose: str) -> None:
    """Every intent of ``purpose`` is complete, each with an order id of its own (none shared, none
    missing); the callers match those ids against the exchange's books."""
    intents = [i for i in world.intents() if i.purpose == purpose]
    assert intents
    assert {i.state for i in intents} == {order_state.COMPLETE}, [(i.key, i.state) for i in intents]
    order_ids = [i.order_id for i in intents]
    assert None not in order_ids and len(set(order_ids)) == len(order_ids)


def test_engine_killed_between_intent_and_acknowledgement_mid_entry_places_each_order_once(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=3, legs=IRON_CONDOR)
    fernet = rekey(world)
    run_id, command_id = world.plan()
    # Three of the six hedges are placed at once, and their replies held past the engine's life.
    sim.control.hang_next(3, seconds=HUNG_SECONDS, execute=True, endpoint="placeorder")

    with engines(db_url, tmp_path, fernet) as started:
        doomed = started.start()

        def caught_mid_send() -> bool:
            intents = world.intents()
            sent = [i for i in intents if i.state == order_state.SENT]
            left = [i for i in intents if i.state != order_state.CREATED]
            placed = len(world.all_exchange_orders())
            # At least the held ones are `sent` (acknowledgements may be written a phase at a time), and
            # every order sent so far is at the exchange.
            assert len(sent) >= 3 and placed == len(left), (placed, [(i.key, i.state) for i in intents])
            return True

        eventually(caught_mid_send, timeout=30, interval=POLL, what="three intents sent, unacknowledged")
        kill_9(doomed)
        killed = world.intents()
        assert len([i for i in killed if i.state == order_state.SENT]) >= 3
        assert world.command(command_id).status == "running"

        started.start()

        def entered() -> bool:
            started.keep_running()
            return world.command(command_id).status == "done" and world.run(run_id).status == "active"

        eventually(entered, timeout=60, interval=POLL, what="the restarted engine finished the entry")

    orders = world.all_exchange_orders()
    assert len(orders) == 12, [(o.symbol, o.action, o.status) for o in orders]
    assert all(o.status == "complete" and o.filled_quantity == 65 for o in orders)
    one_order_per_intent(world, "entry")
    intents = world.intents()
    assert len(intents) == 12
    assert {i.order_id for i in intents} == {o.orderid for o in orders}
    executions = world.executions(run_id)
    assert len(executions) == 12
    for execution in executions:
        assert execution.status == "active", execution.error_message
        assert execution.filled_quantity == execution.quantity == 65
        assert execution.entry_order_ids == [execution.order_id]
    # The intents the killed engine left `sent` were never sent again: the restarted engine found their
    # orders by tag (twelve orders in all, one per intent), the three held hedges among them.
    held = {i.key for i in killed if i.state == order_state.SENT}
    resolved = {i.order_id for i in intents if i.key in held}
    assert len(resolved) == len(held)
    first_three = sorted(o.orderid for o in orders)[:3]
    assert set(first_three) <= resolved and all(o.action == "BUY" for o in orders if o.orderid in first_three)


async def test_engine_killed_between_exit_intent_and_acknowledgement_exits_each_leg_once(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"), ("SELL", "25800PE")))
    fernet = rekey(world)
    run_id, _ = world.plan()
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert {e.status for e in world.executions(run_id)} == {"active"}
    entry_ids = {o.orderid for o in world.all_exchange_orders()}
    entries = len(entry_ids)
    assert entries == 4
    with world.database.session() as session:
        command_id = request_exit(session, user_id=world.user_id, scope="run", token="exit", run_id=run_id).id
    # Both accounts' short buy-backs are placed at once, their replies held past the engine's life.
    sim.control.hang_next(2, seconds=HUNG_SECONDS, execute=True, endpoint="placeorder")

    with engines(db_url, tmp_path, fernet) as started:
        doomed = started.start()

        def caught_mid_exit() -> bool:
            exits = [i for i in world.intents() if i.purpose == "exit"]
            sent = [i for i in exits if i.state == order_state.SENT]
            left = [i for i in exits if i.state != order_state.CREATED]
            placed = len(world.all_exchange_orders())
            assert len(sent) >= 2 and placed == entries + len(left), (
                placed,
                [(i.key, i.state) for i in exits],
            )
            return True

        eventually(caught_mid_exit, timeout=30, interval=POLL, what="two exit intents sent, unacknowledged")
        kill_9(doomed)
        held = [i for i in world.intents() if i.purpose == "exit" and i.state == order_state.SENT]
        assert len(held) >= 2 and {i.side for i in held} == {"BUY"}  # shorts are bought back first
        assert {e.status for e in world.executions(run_id)} >= {"exiting"}

        started.start()

        def closed() -> bool:
            started.keep_running()
            return world.command(command_id).status == "done" and world.run(run_id).status == "closed"

        eventually(closed, timeout=60, interval=POLL, what="the restarted engine finished the exit")

    orders = world.all_exchange_orders()
    exit_orders = [o for o in orders if o.orderid not in entry_ids]
    assert len(orders) == 8, [(o.symbol, o.action, o.status) for o in orders]
    assert all(o.status == "complete" for o in orders)
    one_order_per_intent(world, "exit")
    exit_intents = [i for i in world.intents() if i.purpose == "exit"]
    assert len(exit_intents) == 4
    assert {i.order_id for i in exit_intents} == {o.orderid for o in exit_orders}
    resolved = {i.order_id for i in exit_intents if i.key in {h.key for h in held}}
    assert len(resolved) == len(held) and resolved <= {o.orderid for o in exit_orders if o.action == "BUY"}
    for execution in world.executions(run_id):
        assert execution.status == "exited", execution.error_message
        assert execution.exited_quantity == execution.filled_quantity == 65
        assert execution.exit_order_ids is not None and len(execution.exit_order_ids) == 1
    assert sorted(o for e in world.executions(run_id) for o in e.exit_order_ids or []) == sorted(
        o.orderid for o in exit_orders
    )
    for i in range(2):
        account = sim.running.core.exchange.accounts[sim.api_keys[i]]
        assert all(p.quantity == 0 for p in account.positions.values())
