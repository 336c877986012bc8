"""The engine killed with a real ``kill -9`` in the middle of a risk exit (issue 12, "Faults"), on SQLite
and PostgreSQL: the restarted engine completes the exit, and the exchange holds exactly one exit order
per execution.

The engine is a real subprocess (``algomirror engine`` through ``risk_engine_proc.py``, on the exchange's
simulated time) on the test's database; the paper exchange runs in this process with a ×1 clock, so the
engine's own feed manager streams its ticks and its own risk engine sees the index ramp through max
loss. The kill point is fixed by the exchange: it places the exit orders of two of the three accounts at
once and holds their replies far beyond the engine's life, so the test waits — from the journal and the
exchange's own books — until those four intents are ``sent`` and their orders exist, and kills the
engine right there (the third account's exits have completed). Every wait is a poll with a deadline.

Killed before the order reached the exchange (it never acts on the held calls): the restarted engine
cannot establish the outcome, so those legs end visibly in ``error`` with a critical alert and nothing is
sent on a guess; a person's retry then exits each once (on SQLite; in-process twins of that retry check
an order that turns up late at the broker is adopted, never doubled).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from algomirror.broker.registry import ClientRegistry
from algomirror.domain import order_state
from algomirror.domain.timeutil import utcnow
from algomirror.engine.entry_records import strategy_tag
from algomirror.engine.exit_planning import request_exit, retry_exit
from algomirror.engine.exit_records import claim_exit
from algomirror.engine.exits import ExitExecutor, ExitRetry
from tests.integration.command_support import place
from tests.integration.engine_proc_support import DEADLINE, kill_9, rekey, retried_until_closed, risk_engines
from tests.integration.execution_support import World
from tests.integration.risk_engine_proc import EXITS_VARIABLE
from tests.integration.risk_fault_support import (
    QTY,
    SPOT,
    alerts,
    configure,
    entered,
    every_leg_once,
    exit_commands,
    exit_orders,
    filled_exits,
    risk_events,
    straddle_world,
    until,
)
from tests.sim_fixtures import SimHandle

HUNG_SECONDS = 90.0  # far longer than the test: a held reply never reaches the killed engine
MAX_LOSS = Decimal("3000")


def exit_intents(world: World) -> list[tuple[int, str, str | None]]:
    """(account id, state, order id) of every exit intent."""
    return [(i.account_id, i.state, i.order_id) for i in world.intents() if i.purpose == "exit"]


async def test_engine_killed_mid_risk_exit_is_restarted_and_completes_it_with_one_order_per_execution(
    db_url: str, tmp_path: Path, make_simulator: Callable[..., SimHandle]
) -> None:
    sim = make_simulator(clock="accelerated", speed=1.0, tick_seconds=0.2)
    world = straddle_world(db_url, sim, accounts=3)
    fernet = rekey(world)
    run_id = await entered(world)
    configure(world, max_loss=MAX_LOSS)
    entry_ids = {o.orderid for o in world.all_exchange_orders()}
    assert len(entry_ids) == 6
    held = world.account_ids[:2]
    for key in sim.api_keys[:2]:  # both exits of the first two accounts: placed, replies held
        sim.control.hang_next(2, seconds=HUNG_SECONDS, execute=True, endpoint="placeorder", apikey=key)
    hub = sim.running.core.ws_hub
    assert hub is not None
    offset = (sim.running.core.market.now() - utcnow()).total_seconds()

    with risk_engines(db_url, tmp_path, fernet, offset) as started:
        doomed = started.start()

        def subscribed() -> bool:
            assert doomed.poll() is None, started.logs()
            return all(hub.ref_count(symbol, "NFO") >= 1 for symbol in world.leg_symbols)

        await until(subscribed, "the engine's feed subscribed the legs", timeout=DEADLINE)
        assert exit_commands(world) == []
        sim.control.ramp(*SPOT, 26400, 4)

        def caught_mid_exit() -> bool:
            assert doomed.poll() is None, started.logs()
            intents = exit_intents(world)
            sent = [i for i in intents if i[0] in held and i[1] == order_state.SENT]
            placed = [o for i in range(2) for o in exit_orders(world)[i]]
            third = [e.status for e in world.executions(run_id) if e.account_id == world.account_ids[2]]
            return len(sent) == 4 and len(placed) == 4 and third == ["exited", "exited"]

        await until(caught_mid_exit, "four exits sent, their replies held", timeout=DEADLINE)
        kill_9(doomed)
        [command] = exit_commands(world)
        assert (command.token, command.status) == (f"risk:{run_id}:max_loss", "running")
        killed = world.executions(run_id)
        assert {e.status for e in killed if e.account_id in held} == {"exiting"}

        started.start()

        def closed() -> bool:
            started.keep_running()
            return world.command(command.id).status == "done" and world.run(run_id).status == "closed"

        await until(closed, "the restarted engine finished the exit", timeout=DEADLINE)
        logs = started.logs()

    # The exchange's own books: one exit order per execution, all filled; the held ones were found by
    # tag after the restart, never sent again.
    assert filled_exits(world) == every_leg_once(world), logs
    orders = exit_orders(world)
    assert all(len(orders[i]) == 2 for i in range(3)), logs
    intents = exit_intents(world)
    assert len(intents) == 6 and {state for _, state, _ in intents} == {order_state.COMPLETE}
    exchange_exit_ids = {o.orderid for i in range(3) for o in orders[i]}
    assert {order_id for _, _, order_id in intents} == exchange_exit_ids
    for e in world.executions(run_id):
        assert (e.status, e.exit_reason, e.exited_quantity) == ("exited", "max_loss", QTY), e.error_message
        assert e.exit_order_ids is not None and len(e.exit_order_ids) == 1
    # One breach, recorded once, not fired again by the restarted engine.
    assert len(exit_commands(world)) == 1
    rows = risk_events(world, run_id)
    assert len(rows) == 6 and {r.event_type for r in rows} == {"max_loss"}
    run = world.run(run_id)
    assert run.exit_reason == "max_loss" and run.max_loss_triggered_at is not None
    for i in range(3):
        account = sim.running.core.exchange.accounts[sim.api_keys[i]]
        assert all(p.quantity == 0 for p in account.positions.values())


# ------------------------------------------------------------------ killed before the order arrived

# The exit policy and the orderbook lookup of the engine subprocess, scaled down (10 s first wait, 300 s
# verification, 5 s lookup in production).
SCALED_EXITS = {
    "retry": {"first_wait": 0.2, "max_wait": 0.5, "verify_interval": 0.2, "verify_timeout": 2.0},
    # The lost-order rule off: this test shows the person's retry; the rule has its own test below.
    "driver": {"resolve_seconds": 1.0, "resolve_interval": 0.2, "unplaced_after": None},
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_engine_killed_before_its_exit_orders_reached_the_exchange_shows_error_then_a_retry_exits_once(
    db_url: str, tmp_path: Path, make_simulator: Callable[..., SimHandle]
) -> None:
    sim = make_simulator(clock="accelerated", speed=1.0, tick_seconds=0.2)
    world = straddle_world(db_url, sim, accounts=3)
    fernet = rekey(world)
    run_id = await entered(world)
    configure(world, max_loss=MAX_LOSS)
    first = world.account_ids[0]
    # The first account's two exits are claimed and sent, and the exchange never acts on them.
    sim.control.hang_next(
        2, seconds=HUNG_SECONDS, execute=False, endpoint="placeorder", apikey=sim.api_keys[0]
    )
    hub = sim.running.core.ws_hub
    assert hub is not None
    offset = (sim.running.core.market.now() - utcnow()).total_seconds()

    with risk_engines(db_url, tmp_path, fernet, offset) as started:
        started.env[EXITS_VARIABLE] = json.dumps(SCALED_EXITS)
        doomed = started.start()

        def subscribed() -> bool:
            assert doomed.poll() is None, started.logs()
            return all(hub.ref_count(symbol, "NFO") >= 1 for symbol in world.leg_symbols)

        await until(subscribed, "the engine's feed subscribed the legs", timeout=DEADLINE)
        sim.control.ramp(*SPOT, 26400, 4)

        def caught_mid_send() -> bool:
            assert doomed.poll() is None, started.logs()
            sent = [i for i in exit_intents(world) if i[0] == first and i[1] == order_state.SENT]
            others = [e.status for e in world.executions(run_id) if e.account_id != first]
            return len(sent) == 2 and others == ["exited"] * 4

        await until(caught_mid_send, "the first account's exits sent, the others done", timeout=DEADLINE)
        assert exit_orders(world)[0] == []
        kill_9(doomed)
        started.start()

        def ended() -> bool:
            started.keep_running()
            return {e.status for e in world.executions(run_id) if e.account_id == first} == {"error"}

        await until(ended, "the restarted engine gave the unverifiable exits up", timeout=DEADLINE)
        # Never sent twice on a guess: the exchange never saw an exit of the first account; it is
        # visibly in error with one critical alert per leg, and the other accounts exited once.
        assert exit_orders(world)[0] == [], started.logs()
        assert filled_exits(world) == {0: [], 1: sorted(world.leg_symbols), 2: sorted(world.leg_symbols)}
        failed = alerts(world, "exit_failed")
        assert len(failed) == 2 and {a.severity for a in failed} == {"critical"}
        errors = [e for e in world.executions(run_id) if e.account_id == first]
        assert all("cannot be established" in (e.error_message or "") for e in errors)
        assert world.run(run_id).status == "error"

        # A person retries both legs from the page: the running engine buys each back once.
        logs = await retried_until_closed(started, world, run_id, [e.id for e in errors])

    assert filled_exits(world) == every_leg_once(world), logs
    assert all(len(orders) == 2 for orders in exit_orders(world).values())
    assert {e.status for e in world.executions(run_id)} == {"exited"}
    assert len(risk_events(world, run_id)) == 6
    assert exit_commands(world)[0].token == f"risk:{run_id}:max_loss"


async def lost_exit(world: World) -> tuple[int, int]:
    """A straddle entered and the short call's exit as a killed engine leaves it when the order never
    reached the broker: claimed, its intent ``sent``, nothing at the exchange, the run's risk exit
    command pending. Returns (run id, the call's execution id)."""
    run_id = await entered(world)
    short = world.executions(run_id)[0]
    assert claim_exit(world.database, short.id, "max_loss", "exit of the run") == 1
    intent = world.record_intent(
        f"exec:{short.id}:exit:1:1", short.id, side="BUY", quantity=QTY, purpose="exit"
    )
    assert world.journal().claim_send(intent.id)
    with world.database.session() as session:
        request_exit(
            session, user_id=world.user_id, scope="run", token="risk", run_id=run_id, reason="max_loss"
        )
    return run_id, short.id


def exit_executor(world: World, **driver: Any) -> tuple[ExitExecutor, ClientRegistry]:
    """An exit executor that gives up verifying after 0.5 s (and its registry, to close)."""
    retry = ExitRetry(attempts=5, first_wait=0.01, verify_interval=0.05, verify_timeout=0.5)
    return world.exit_executor(retry, resolve_seconds=0.3, **driver)


async def unplaced_exit_in_error(world: World) -> tuple[int, int, ExitExecutor, ClientRegistry]:
    """:func:`lost_exit`, resumed by the exit command with the lost-order rule off until it is in
    ``error`` (the outcome cannot be established). Returns (run id, execution id, the executor and its
    registry, to close)."""
    run_id, short = await lost_exit(world)
    exits, registry = exit_executor(world, unplaced_after=None)
    assert await exits.process_once() == 1
    rows = {e.id: e for e in world.executions(run_id)}
    assert rows[short].status == "error"  # visibly, as the kill test above shows
    assert "cannot be established" in (rows[short].error_message or "")
    assert [o.symbol for o in exit_orders(world)[0]] == [world.leg_symbols[1]]  # the put's, not the call's
    return run_id, short, exits, registry


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_exit_order_lost_mid_send_is_concluded_not_placed_and_the_next_attempt_exits_it_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = straddle_world(db_url, simulator_session, accounts=1)
    run_id, short = await lost_exit(world)
    # The lost-order rule (1 s here) outlasts the verification's own 0.5 s: verification waits for it.
    exits, registry = exit_executor(world, unplaced_after=1.0)
    try:
        assert await exits.process_once() == 1
    finally:
        await registry.aclose()
    # No person involved: the orderbook never showed the call's buy-back and the broker's net was what
    # our fills make it, so attempt 1 was not placed and attempt 2 bought the call back, once.
    rows = {e.id: e for e in world.executions(run_id)}
    assert rows[short].status == "exited", rows[short].error_message
    dead = next(i for i in world.intents() if i.key == f"exec:{short}:exit:1:1")
    assert dead.state == order_state.CANCELLED and "not placed" in (dead.rejection_reason or "")
    assert [o.symbol for o in exit_orders(world)[0]].count(world.leg_symbols[0]) == 1
    assert filled_exits(world) == {0: sorted(world.leg_symbols)}
    assert world.run(run_id).status == "closed"
    assert alerts(world, "exit_failed") == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_exit_lost_mid_send_is_not_concluded_not_placed_while_the_broker_net_moved(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=1)
    run_id, short = await lost_exit(world)
    # The call is bought back at the broker by an order the lookup cannot take for ours (another
    # strategy's tag): our fills no longer explain the broker's net, so nothing may be concluded or sent.
    other = place(sim, 0, symbol=world.leg_symbols[0], action="BUY", quantity=str(QTY), pricetype="MARKET")
    exits, registry = exit_executor(world, unplaced_after=0.5)
    try:
        assert await exits.process_once() == 1
    finally:
        await registry.aclose()
    rows = {e.id: e for e in world.executions(run_id)}
    assert rows[short].status == "error", rows[short].error_message
    dead = next(i for i in world.intents() if i.key == f"exec:{short}:exit:1:1")
    assert dead.state == order_state.UNKNOWN
    calls = [o.orderid for o in exit_orders(world)[0] if o.symbol == world.leg_symbols[0]]
    assert calls == [other]


async def persons_retry(world: World, exits: ExitExecutor, execution_id: int) -> None:
    with world.database.session() as session:
        retry_exit(session, user_id=world.user_id, execution_id=execution_id, token="retry-1")
    assert await exits.process_once() == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_leg_whose_exit_order_never_reached_the_broker_is_exited_once_by_a_persons_retry(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = straddle_world(db_url, simulator_session, accounts=1)
    run_id, short, exits, registry = await unplaced_exit_in_error(world)
    try:
        await persons_retry(world, exits, short)
    finally:
        await registry.aclose()
    # The broker showed the short open and nothing of ours: the dead intent is closed as not placed
    # and the retry buys the call back, once.
    rows = {e.id: e for e in world.executions(run_id)}
    assert rows[short].status == "exited", rows[short].error_message
    assert filled_exits(world) == {0: sorted(world.leg_symbols)}
    assert len(exit_orders(world)[0]) == 2
    dead = next(i for i in world.intents() if i.key == f"exec:{short}:exit:1:1")
    assert dead.state == order_state.CANCELLED and "not placed" in (dead.rejection_reason or "")
    assert world.run(run_id).status == "closed"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_persons_retry_adopts_an_exit_order_that_reached_the_broker_late_and_sends_nothing(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = straddle_world(db_url, sim, accounts=1)
    run_id, short, exits, registry = await unplaced_exit_in_error(world)
    # The dead engine's order turns up at the broker after all (tagged, as the engine sends it).
    late = place(
        sim,
        0,
        symbol=world.leg_symbols[0],
        action="BUY",
        quantity=str(QTY),
        pricetype="MARKET",
        strategy=strategy_tag(world.strategy_id),
    )
    try:
        await persons_retry(world, exits, short)
    finally:
        await registry.aclose()
    rows = {e.id: e for e in world.executions(run_id)}
    assert rows[short].status == "exited", rows[short].error_message
    assert rows[short].exit_order_ids == [late]
    # Never twice: the call's only buy-back is the late order.
    assert [o.orderid for o in exit_orders(world)[0] if o.symbol == world.leg_symbols[0]] == [late]
    assert filled_exits(world) == {0: sorted(world.leg_symbols)}
