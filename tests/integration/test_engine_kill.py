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

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cryptography.fernet import Fernet

from algomirror.db.models import TradingAccount
from algomirror.domain import order_state
from algomirror.engine.exit_planning import request_exit
from algomirror.security import SecretBox
from tests.helpers import eventually
from tests.integration.execution_support import IRON_CONDOR, World, executor_of, make_world
from tests.sim_fixtures import SimHandle

ENGINE = Path(sys.executable).parent / "algomirror"
HUNG_SECONDS = 90.0  # far longer than the test: a held reply never reaches the killed engine
POLL = 0.05


def rekey(world: World) -> bytes:
    """Give the world a Fernet key the engine subprocess is also given; re-encrypt the accounts' keys."""
    fernet = Fernet.generate_key()
    world.box = SecretBox(fernet)
    with world.database.session() as session:
        for i, account_id in enumerate(world.account_ids):
            account = session.get(TradingAccount, account_id)
            assert account is not None
            account.api_key_encrypted = world.box.encrypt(world.sim.api_keys[i])
    return fernet


class Engines:
    """Starts ``algomirror engine`` subprocesses on one database; kills whatever is left at the end."""

    def __init__(self, db_url: str, tmp_path: Path, fernet: bytes) -> None:
        self.env = {
            **os.environ,
            "ALGOMIRROR_DATABASE_URL": db_url,
            "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance"),
            "ALGOMIRROR_FERNET_KEY": fernet.decode(),
            "ALGOMIRROR_SYNC_INTERVAL_MARKET": "5",
            "ALGOMIRROR_SYNC_INTERVAL_CLOSED": "5",
        }
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self) -> subprocess.Popen[bytes]:
        # The log goes to a file: a pipe nobody reads would block the engine once it filled.
        log = (self.tmp_path / f"engine-{len(self.started) + 1}.log").open("wb")
        proc = subprocess.Popen([str(ENGINE), "engine"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append((proc, log))
        return proc

    def keep_running(self) -> None:
        """Restart the last engine if it was refused the lock (exit 2): the killed one's database session
        (PostgreSQL's advisory lock) may outlive it for a moment. Any other exit fails the test."""
        proc, _ = self.started[-1]
        if proc.poll() is None:
            return
        assert proc.returncode == 2, self.log_of(proc)[-3000:].decode(errors="replace")
        self.start()

    def log_of(self, proc: subprocess.Popen[bytes]) -> bytes:
        index = next(i for i, (p, _) in enumerate(self.started) if p is proc)
        return (self.tmp_path / f"engine-{index + 1}.log").read_bytes()

    def close(self) -> None:
        for proc, log in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            log.close()


@contextmanager
def engines(db_url: str, tmp_path: Path, fernet: bytes) -> Iterator[Engines]:
    started = Engines(db_url, tmp_path, fernet)
    try:
        yield started
    finally:
        started.close()


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


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
