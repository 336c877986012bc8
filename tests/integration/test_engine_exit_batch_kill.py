"""The engine killed with a real ``kill -9`` between the commit of the exit's fast first attempt (every
short of the breached run claimed, its intents ``sent``) and the first send (SQLite):
the restarted engine sends nothing on a guess (the orderbook has no order of ours, so the legs end
visibly in ``error``), and a person's retry then exits every leg once.

The killed engine is ``exit_kill_proc.py`` (``algomirror engine`` that SIGKILLs itself right after that
commit), the restarted one ``risk_engine_proc.py``; the paper exchange runs in this process, its feed
ramps the index through the run's max loss. Every wait is a poll with a deadline."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from algomirror.domain import order_state
from algomirror.domain.timeutil import utcnow
from tests.integration.engine_proc_support import DEADLINE, rekey, retried_until_closed, risk_engines
from tests.integration.risk_engine_proc import EXITS_VARIABLE
from tests.integration.risk_fault_support import (
    SPOT,
    alerts,
    configure,
    entered,
    every_leg_once,
    exit_commands,
    exit_orders,
    filled_exits,
    straddle_world,
    until,
)
from tests.integration.test_risk_faults_kill import SCALED_EXITS
from tests.sim_fixtures import SimHandle

# ``algomirror engine`` that SIGKILLs itself right after the fast path's commit.
KILLING_COMMAND = (sys.executable, str(Path(__file__).with_name("exit_kill_proc.py")))
MAX_LOSS = Decimal("3000")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_engine_killed_between_the_exit_batch_commit_and_its_sends_never_sends_twice(
    db_url: str, tmp_path: Path, make_simulator: Callable[..., SimHandle]
) -> None:
    sim = make_simulator(clock="accelerated", speed=1.0, tick_seconds=0.2)
    world = straddle_world(db_url, sim, accounts=3)
    fernet = rekey(world)
    run_id = await entered(world)
    configure(world, max_loss=MAX_LOSS)
    hub = sim.running.core.ws_hub
    assert hub is not None
    offset = (sim.running.core.market.now() - utcnow()).total_seconds()

    with risk_engines(db_url, tmp_path, fernet, offset) as started:
        started.env[EXITS_VARIABLE] = json.dumps(SCALED_EXITS)
        doomed = started.start(KILLING_COMMAND)

        def subscribed() -> bool:
            assert doomed.poll() is None, started.logs()
            return all(hub.ref_count(symbol, "NFO") >= 1 for symbol in world.leg_symbols)

        await until(subscribed, "the engine's feed subscribed the legs", timeout=DEADLINE)
        sim.control.ramp(*SPOT, 26400, 4)
        await until(lambda: doomed.poll() is not None, "the engine killed itself after the claim", DEADLINE)
        assert doomed.returncode == -9, started.logs()

        # The batch committed: every leg (both are shorts) of every account claimed at attempt 1, its
        # intent sent, and nothing reached the exchange.
        intents = [i for i in world.intents() if i.purpose == "exit"]
        assert len(intents) == 6 and {i.state for i in intents} == {order_state.SENT}
        assert {i.key.split(":")[2:4] == ["exit", "1"] for i in intents} == {True}
        assert {(e.status, e.exit_retry_count) for e in world.executions(run_id)} == {("exiting", 1)}
        [command] = exit_commands(world)
        assert command.status == "running"
        assert all(orders == [] for orders in exit_orders(world).values())

        started.start()

        def ended() -> bool:
            started.keep_running()
            return {e.status for e in world.executions(run_id)} == {"error"}

        await until(ended, "the restarted engine gave the unverifiable exits up", timeout=DEADLINE)
        # Never sent on a guess: no exit order at the exchange, each leg in error with its alert.
        assert all(orders == [] for orders in exit_orders(world).values()), started.logs()
        assert len(alerts(world, "exit_failed")) == 6
        assert {i.state for i in world.intents() if i.purpose == "exit"} == {order_state.UNKNOWN}

        errors = [e.id for e in world.executions(run_id)]
        logs = await retried_until_closed(started, world, run_id, errors)

    assert filled_exits(world) == every_leg_once(world), logs
    assert all(len(orders) == 2 for orders in exit_orders(world).values()), logs
    assert {e.status for e in world.executions(run_id)} == {"exited"}
