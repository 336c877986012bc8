"""The chaos harness's killable engine (issue 13, part B: ``python -m algomirror.chaos.engine_proc``).

Unit level: the seeded draw is a function of seed, start index and the points reached; every
``AM_CHAOS_*`` variable is parsed strictly (a bad value: one line, exit 2, no traceback); the
wrapped functions behave as the originals when the draw says "no kill".

End to end (SQLite): for each crash point, the engine process with rate 1.0 and only that point, on a
test's database with the paper exchange in this process; work that reaches the point; the process dies
by SIGKILL with the point in its log; then an engine without crash settings finishes the work, and the
exchange's own books hold exactly one order per intended order. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from algomirror.chaos.crash import (
    AFTER_EXIT_CLAIM,
    AFTER_INTENT,
    AFTER_SEND,
    CRASH_LOG_VARIABLE,
    CRASH_POINTS,
    CRASH_VARIABLE,
    ChaosSettingsError,
    Crasher,
    CrashPlan,
    install,
    parse_crash,
)
from algomirror.chaos.engine_proc import (
    CLOCK_VARIABLE,
    EXITS_VARIABLE,
    parse_clock,
    parse_exits,
    settings_from_environment,
)
from algomirror.db.models import TradingAccount
from algomirror.domain import order_state
from algomirror.engine import exit_work
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.exit_records import claim_exit
from algomirror.engine.exits import ExitRetry
from algomirror.engine.journal import Journal
from algomirror.engine.order_driver import OrderDriver
from tests.integration.engine_proc_support import DEADLINE, Engines, engines, rekey
from tests.integration.execution_support import World, make_world
from tests.integration.risk_fault_support import QTY, entered, exit_orders, filled_exits, until
from tests.sim_fixtures import SimHandle

ENGINE_PROC = (sys.executable, "-m", "algomirror.chaos.engine_proc")
# The exit policy and the orderbook lookup, scaled down (10 s first wait, 300 s verification, 5 s lookup
# in production), so an unverifiable exit ends in ``error`` within seconds.
SCALED_EXITS = {
    "retry": {"first_wait": 0.2, "max_wait": 0.5, "verify_interval": 0.2, "verify_timeout": 2.0},
    "driver": {"resolve_seconds": 1.0, "resolve_interval": 0.2, "status_interval": 0.05},
}
ONE_SHORT = (("SELL", "26000CE"),)
SHORT_STRADDLE = (("SELL", "26000CE"), ("SELL", "26000PE"))
# The engine process runs on the test's database file: SQLite is enough for what this module shows.
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


# ------------------------------------------------------------------------------------------ the draw


def plan(
    tmp_path: Path, *, seed: int = 7, start: int = 0, rate: float = 0.5, points: Any = None
) -> CrashPlan:
    return CrashPlan(
        seed=seed,
        start=start,
        rate=rate,
        points=frozenset(CRASH_POINTS if points is None else points),
        log=tmp_path / "crash.log",
    )


def kills(crash: CrashPlan, reached: list[str]) -> list[int]:
    """The indexes of ``reached`` at which ``crash`` asks for a kill (a recorder stands in for SIGKILL)."""
    asked: list[int] = []
    crasher = Crasher(crash, kill=lambda: asked.append(len(asked)))
    return [n for n, point in enumerate(reached) if crasher.reach(point)]


def test_the_draw_is_a_function_of_seed_start_and_the_points_reached(tmp_path: Path) -> None:
    reached = [CRASH_POINTS[n % 3] for n in range(60)]
    first = kills(plan(tmp_path), reached)
    assert first == kills(plan(tmp_path), reached)  # a replay kills at the same points
    assert 0 < len(first) < len(reached)  # rate 0.5: some, not all
    assert first != kills(plan(tmp_path, start=1), reached)  # the next engine start draws anew
    assert first != kills(plan(tmp_path, seed=8), reached)
    # A point the plan does not name draws nothing: the named ones see the same stream.
    only_sends = [p for p in reached if p == AFTER_SEND]
    mixed = kills(plan(tmp_path, points=[AFTER_SEND]), reached)
    assert [reached[n] for n in mixed] == [AFTER_SEND] * len(mixed)
    alone = kills(plan(tmp_path, points=[AFTER_SEND]), only_sends)
    assert len(alone) == len(mixed)
    # The stream is random.Random(f"{seed}:{start}"), one random() per named point reached.
    import random

    stream = random.Random("7:0")
    assert first == [n for n in range(len(reached)) if stream.random() < 0.5]
    # Every kill was logged, one line per kill, in order.
    lines = (tmp_path / "crash.log").read_text().splitlines()
    assert lines[: len(first)] == [reached[n] for n in first]


def test_rate_one_kills_at_the_first_named_point_and_rate_zero_never(tmp_path: Path) -> None:
    reached = [AFTER_INTENT, AFTER_EXIT_CLAIM, AFTER_SEND]
    assert kills(plan(tmp_path, rate=1.0, points=[AFTER_SEND]), reached)[:1] == [2]
    assert kills(plan(tmp_path, rate=0.0), reached * 20) == []
    with pytest.raises(ValueError, match="unknown crash point"):
        Crasher(plan(tmp_path)).reach("after_lunch")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"seed": 1, "start": 0, "rate": 1}', "missing ['points']"),
        ('{"seed": 1, "start": 0, "rate": 1, "points": ["after_send"], "x": 1}', "unknown ['x']"),
        ('{"seed": "1", "start": 0, "rate": 1, "points": ["after_send"]}', "'seed' must be an integer"),
        ('{"seed": true, "start": 0, "rate": 1, "points": ["after_send"]}', "'seed' must be an integer"),
        ('{"seed": 1, "start": -1, "rate": 1, "points": ["after_send"]}', "'start' must be 0 or more"),
        ('{"seed": 1, "start": 0, "rate": 1.5, "points": ["after_send"]}', "'rate' must be a number"),
        ('{"seed": 1, "start": 0, "rate": "1", "points": ["after_send"]}', "'rate' must be a number"),
        ('{"seed": 1, "start": 0, "rate": 1, "points": []}', "non-empty list"),
        ('{"seed": 1, "start": 0, "rate": 1, "points": ["after_lunch"]}', "unknown crash point"),
        ('{"seed": 1, "start": 0, "rate": 1, "points": ["after_send", "after_send"]}', "twice"),
    ],
)
def test_a_bad_crash_value_is_refused_with_its_reason(value: str, why: str) -> None:
    with pytest.raises(ChaosSettingsError) as caught:
        parse_crash(value, "/tmp/log")
    assert why in str(caught.value)


def test_the_crash_log_is_required_and_the_clock_and_exits_are_checked() -> None:
    good = '{"seed": 1, "start": 0, "rate": 1, "points": ["after_send"]}'
    with pytest.raises(ChaosSettingsError, match=CRASH_LOG_VARIABLE):
        parse_crash(good, None)
    assert settings_from_environment({CRASH_VARIABLE: " "}).crash is None  # empty: unset
    clock = parse_clock('{"sim_at": "2026-11-25T10:30:00+05:30", "wall_at": 100.0, "speed": 2}')
    assert clock.speed == 2.0 and clock.sim_at.utcoffset() is not None
    for bad, why in [
        ('{"sim_at": "2026-11-25T10:30:00", "wall_at": 1, "speed": 1}', "needs a UTC offset"),
        ('{"sim_at": "soon", "wall_at": 1, "speed": 1}', "not an ISO 8601 instant"),
        ('{"sim_at": "2026-11-25T10:30:00+05:30", "wall_at": 1, "speed": 0}', "'speed' must be"),
        ('{"sim_at": "2026-11-25T10:30:00+05:30", "wall_at": "x", "speed": 1}', "'wall_at' must be"),
        ('{"sim_at": "2026-11-25T10:30:00+05:30", "wall_at": 1}', "keys must be exactly"),
    ]:
        with pytest.raises(ChaosSettingsError, match=why):
            parse_clock(bad)
    exits = parse_exits(json.dumps(SCALED_EXITS))
    assert exits.retry["verify_timeout"] == 2.0 and exits.driver["resolve_seconds"] == 1.0
    for bad, why in [
        ('{"retry": {"attempts": 1.5}}', "whole number"),
        ('{"retry": {"first_wait": -1}}', "number ≥ 0"),
        ('{"driver": {"fill_time": 1}}', "unknown field"),
        ('{"retries": {}}', "unknown key"),
    ]:
        with pytest.raises(ChaosSettingsError, match=why):
            parse_exits(bad)


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        (CRASH_VARIABLE, '{"seed": 1}', "AM_CHAOS_CRASH: missing"),
        (CLOCK_VARIABLE, "now", "AM_CHAOS_CLOCK is not valid JSON"),
        (EXITS_VARIABLE, '{"retry": {"attempts": "5"}}', "AM_CHAOS_EXITS: retry.attempts"),
    ],
)
def test_the_engine_process_refuses_a_bad_variable_in_one_line_with_exit_2(
    tmp_path: Path, variable: str, value: str, why: str
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "ALGOMIRROR_DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}",
        "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance"),
        variable: value,
    }
    done = subprocess.run([*ENGINE_PROC], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"algomirror: {why}"), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "never.db").exists()  # refused before the engine opened anything


# ------------------------------------------------------------------------------- the engine process


def chaos_engines(db_url: str, tmp_path: Path, fernet: bytes, sim: SimHandle) -> Any:
    """:func:`engines` of the chaos engine process on the exchange's clock, exits scaled down."""
    clock = {"sim_at": sim.running.core.market.now().isoformat(), "wall_at": time.time(), "speed": 1.0}
    env = {CLOCK_VARIABLE: json.dumps(clock), EXITS_VARIABLE: json.dumps(SCALED_EXITS)}
    return engines(db_url, tmp_path, fernet, ENGINE_PROC, env)


def arm(started: Engines, tmp_path: Path, point: str) -> Path:
    """The next engine started kills itself at the first ``point`` it reaches; its crash log."""
    log = tmp_path / "crash.log"
    started.env[CRASH_VARIABLE] = json.dumps({"seed": 13, "start": 0, "rate": 1.0, "points": [point]})
    started.env[CRASH_LOG_VARIABLE] = str(log)
    return log


def disarm(started: Engines) -> None:
    del started.env[CRASH_VARIABLE], started.env[CRASH_LOG_VARIABLE]


async def died_at(started: Engines, proc: subprocess.Popen[bytes], log: Path, point: str) -> None:
    await until(lambda: proc.poll() is not None, f"the engine killed itself at {point}", timeout=DEADLINE)
    assert proc.returncode == -signal.SIGKILL, started.logs()
    assert log.read_text() == point + "\n"


def chaos_world(db_url: str, sim: SimHandle, legs: Any) -> tuple[World, bytes]:
    """One paper account (its feed on the exchange's WebSocket) with a strategy of ``legs``, re-keyed
    for the engine process; the world and the Fernet key."""
    world = make_world(db_url, sim, accounts=1, legs=legs)
    with world.database.session() as session:
        session.execute(update(TradingAccount).values(websocket_url=sim.ws_url, is_primary=True))
    return world, rekey(world)


def one_order_per_leg(world: World, action: str) -> dict[str, int]:
    """Per symbol, how many ``action`` orders the exchange holds (every status)."""
    counts: dict[str, int] = {}
    for order in world.exchange_orders(0):
        if order.action == action:
            counts[order.symbol] = counts.get(order.symbol, 0) + 1
    return counts


@SQLITE
async def test_after_send_kills_an_entry_whose_order_the_broker_took_and_the_restart_adopts_it(
    db_url: str, tmp_path: Path, make_simulator: Callable[..., SimHandle]
) -> None:
    sim = make_simulator(clock="accelerated", speed=1.0, tick_seconds=0.2)
    world, fernet = chaos_world(db_url, sim, ONE_SHORT)
    with chaos_engines(db_url, tmp_path, fernet, sim) as started:
        log = arm(started, tmp_path, AFTER_SEND)
        doomed = started.start()
        run_id, command_id = world.plan(quantity=QTY)
        await died_at(started, doomed, log, AFTER_SEND)
        # The broker holds the order; the journal never heard of it (the intent is still ``sent``).
        [intent] = world.intents()
        assert (intent.state, intent.order_id) == (order_state.SENT, None)
        [order] = world.exchange_orders(0)
        assert (order.symbol, order.action, order.quantity) == (world.leg_symbols[0], "SELL", QTY)

        disarm(started)
        started.start()

        def entered_once() -> bool:
            started.keep_running()
            return world.command(command_id).status == "done" and world.run(run_id).status == "active"

        await until(entered_once, "the restarted engine finished the entry", timeout=DEADLINE)
        logs = started.logs()
    # Found by tag in the orderbook and adopted, never sent again: one order at the exchange.
    assert one_order_per_leg(world, "SELL") == {world.leg_symbols[0]: 1}, logs
    assert len(world.exchange_orders(0)) == 1
    [intent] = world.intents()
    assert (intent.state, intent.order_id) == (order_state.COMPLETE, order.orderid)
    [execution] = world.executions(run_id)
    assert (execution.status, execution.filled_quantity) == ("active", QTY)
    assert execution.entry_order_ids == [order.orderid]


async def exit_killed_then_restarted(
    db_url: str, tmp_path: Path, sim: SimHandle, point: str
) -> tuple[World, int]:
    """A short straddle entered (in this process); the engine process, armed at ``point``, takes a
    person's exit of the run and dies at the exit's first claim; a plain engine then finishes the exit.
    Returns the world and the run id."""
    world, fernet = chaos_world(db_url, sim, SHORT_STRADDLE)
    run_id = await entered(world)
    with chaos_engines(db_url, tmp_path, fernet, sim) as started:
        log = arm(started, tmp_path, point)
        doomed = started.start()
        with world.database.session() as session:
            request_exit(session, user_id=world.user_id, scope="run", token="exit-1", run_id=run_id)
        await died_at(started, doomed, log, point)
        # Both legs claimed at attempt 1 and their intents committed ``sent``; nothing left the engine.
        assert {(e.status, e.exit_retry_count) for e in world.executions(run_id)} == {("exiting", 1)}
        exits = [i for i in world.intents() if i.purpose == "exit"]
        assert len(exits) == 2 and {i.state for i in exits} == {order_state.SENT}
        assert exit_orders(world)[0] == []

        disarm(started)
        started.start()

        def closed() -> bool:
            started.keep_running()
            return world.run(run_id).status == "closed"

        await until(closed, "the restarted engine finished the exit", timeout=DEADLINE)
        logs = started.logs()
    # A person's exit: the orderbook and a clean broker read showed attempt 1's orders never arrived, so
    # they were closed as not placed and attempt 2 bought each leg back, once.
    attempts = {i.key: (i.state, i.rejection_reason) for i in world.intents() if i.purpose == "exit"}
    for execution in world.executions(run_id):
        state, reason = attempts[f"exec:{execution.id}:exit:1:1"]
        assert state == order_state.CANCELLED and "not placed" in (reason or ""), logs
        assert attempts[f"exec:{execution.id}:exit:2:1"][0] == order_state.COMPLETE, logs
        assert (execution.status, execution.exited_quantity) == ("exited", QTY), execution.error_message
    assert filled_exits(world) == {0: sorted(world.leg_symbols)}, logs
    return world, run_id


@SQLITE
async def test_after_exit_claim_kills_an_exit_before_its_orders_and_each_leg_is_exited_once(
    db_url: str, tmp_path: Path, make_simulator: Callable[..., SimHandle]
) -> None:
    sim = make_simulator(clock="accelerated", speed=1.0, tick_seconds=0.2)
    world, run_id = await exit_killed_then_restarted(db_url, tmp_path, sim, AFTER_EXIT_CLAIM)
    # Exactly one entry and one exit order per leg at the exchange.
    assert one_order_per_leg(world, "SELL") == dict.fromkeys(world.leg_symbols, 1)
    assert one_order_per_leg(world, "BUY") == dict.fromkeys(world.leg_symbols, 1)
    assert {e.status for e in world.executions(run_id)} == {"exited"}
    assert world.run(run_id).status == "closed"


@SQLITE
async def test_after_intent_kills_an_exit_whose_intents_are_sent_and_each_leg_is_exited_once(
    db_url: str, tmp_path: Path, make_simulator: Callable[..., SimHandle]
) -> None:
    sim = make_simulator(clock="accelerated", speed=1.0, tick_seconds=0.2)
    world, run_id = await exit_killed_then_restarted(db_url, tmp_path, sim, AFTER_INTENT)
    assert one_order_per_leg(world, "SELL") == dict.fromkeys(world.leg_symbols, 1)
    assert one_order_per_leg(world, "BUY") == dict.fromkeys(world.leg_symbols, 1)
    assert {e.status for e in world.executions(run_id)} == {"exited"}


@SQLITE
async def test_after_send_kills_an_exit_whose_order_the_broker_took_and_no_leg_is_bought_back_twice(
    db_url: str, tmp_path: Path, make_simulator: Callable[..., SimHandle]
) -> None:
    sim = make_simulator(clock="accelerated", speed=1.0, tick_seconds=0.2)
    world, fernet = chaos_world(db_url, sim, SHORT_STRADDLE)
    run_id = await entered(world)
    with chaos_engines(db_url, tmp_path, fernet, sim) as started:
        log = arm(started, tmp_path, AFTER_SEND)
        doomed = started.start()
        with world.database.session() as session:
            request_exit(session, user_id=world.user_id, scope="run", token="exit-1", run_id=run_id)
        await died_at(started, doomed, log, AFTER_SEND)
        # At least the accepted buy-back is at the exchange (the other leg's may be too: both were
        # placed at once); the journal recorded no order id.
        assert exit_orders(world)[0]
        assert all(i.order_id is None for i in world.intents() if i.purpose == "exit")

        disarm(started)
        started.start()

        def closed() -> bool:
            started.keep_running()
            return world.run(run_id).status == "closed"

        await until(closed, "the restarted engine finished the exit", timeout=DEADLINE)
        logs = started.logs()
    # Whatever had reached the exchange was adopted from the orderbook, never sent again.
    assert one_order_per_leg(world, "BUY") == dict.fromkeys(world.leg_symbols, 1), logs
    assert filled_exits(world) == {0: sorted(world.leg_symbols)}
    exchange_ids = {o.orderid for o in exit_orders(world)[0]}
    recorded = {
        i.order_id for i in world.intents() if i.purpose == "exit" and i.state == order_state.COMPLETE
    }
    assert recorded == exchange_ids
    assert {(e.status, e.exited_quantity) for e in world.executions(run_id)} == {("exited", QTY)}


@SQLITE
async def test_after_intent_kills_an_entry_whose_send_was_claimed_and_the_restart_never_sends_it(
    db_url: str, tmp_path: Path, make_simulator: Callable[..., SimHandle]
) -> None:
    sim = make_simulator(clock="accelerated", speed=1.0, tick_seconds=0.2)
    world, fernet = chaos_world(db_url, sim, ONE_SHORT)
    with chaos_engines(db_url, tmp_path, fernet, sim) as started:
        log = arm(started, tmp_path, AFTER_INTENT)
        doomed = started.start()
        world.plan(quantity=QTY)
        await died_at(started, doomed, log, AFTER_INTENT)
        [intent] = world.intents()
        assert intent.state == order_state.SENT
        assert world.exchange_orders(0) == []

        disarm(started)
        started.start()

        def looked_up() -> bool:
            started.keep_running()
            return [i.state for i in world.intents()] == [order_state.UNKNOWN]

        # The restarted engine looks for the order in the orderbook and, not finding it, leaves the
        # intent unknown: an order whose send was claimed is never sent a second time on a guess.
        await until(looked_up, "the restarted engine looked the order up", timeout=DEADLINE)
        assert world.exchange_orders(0) == [], started.logs()


class Counting(Crasher):
    """A crasher that records every point reached (and never kills: rate 0)."""

    def __init__(self, crash: CrashPlan) -> None:
        super().__init__(crash, kill=self._refuse)
        self.reached: list[str] = []

    def _refuse(self) -> None:
        raise AssertionError("rate 0 must never kill")

    def reach(self, point: str) -> bool:
        self.reached.append(point)
        return super().reach(point)


@SQLITE
async def test_the_wrapped_engine_reaches_each_point_on_entry_and_exit_and_behaves_as_the_plain_one(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    crasher = Counting(plan(tmp_path, rate=0.0))
    restore = install(crasher)
    try:
        world = make_world(db_url, simulator_session, accounts=1, legs=SHORT_STRADDLE)
        run_id = await entered(world)
        # The entry's batch claim (one draw for the batch), then each accepted order.
        assert crasher.reached == [AFTER_INTENT, AFTER_SEND, AFTER_SEND]
        crasher.reached.clear()
        exits, registry = world.exit_executor(
            ExitRetry(attempts=5, first_wait=0.01, verify_interval=0.05, verify_timeout=0.5)
        )
        with world.database.session() as session:
            request_exit(session, user_id=world.user_id, scope="run", token="exit-1", run_id=run_id)
        try:
            assert await exits.process_once() == 1
        finally:
            await registry.aclose()
        # The exit's first claim opens both windows (executions claimed, intents sent), then each order.
        assert crasher.reached == [AFTER_EXIT_CLAIM, AFTER_INTENT, AFTER_SEND, AFTER_SEND]
    finally:
        restore()
    # Nothing drawn below rate 0 killed, nothing was logged, and the work is the plain engine's.
    assert not (tmp_path / "crash.log").exists()
    assert {(e.status, e.exited_quantity) for e in world.executions(run_id)} == {("exited", QTY)}
    assert one_order_per_leg(world, "SELL") == dict.fromkeys(world.leg_symbols, 1)
    assert one_order_per_leg(world, "BUY") == dict.fromkeys(world.leg_symbols, 1)
    # The originals are back.
    assert Journal.claim_send.__name__ == "claim_send" and OrderDriver.place.__name__ == "place"
    assert vars(exit_work)["claim_exit"] is claim_exit
