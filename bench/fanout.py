"""Entry fan-out benchmark: one iron condor (2 BUY hedges, 2 SELL shorts, MARKET, one lot) on 100 paper
accounts, 20 ms injected latency on every call.

The paper exchange runs as its own process (``algomirror simulator``: manual clock at Wed 25 Nov 2026
10:30 IST, its per-key rate limits ON, one API key per account). The engine side is this process: an
:class:`EntryExecutor` with the engine's default configuration and a default :class:`ClientRegistry`,
on SQLite in a temp dir (or PostgreSQL with ``ALGOMIRROR_BENCH_PG``, see bench/dashboard.py). The run is
planned with :func:`plan_run`, its ``execute_run`` command queued with :func:`request_execute`, and the
timer runs from the queued command to :meth:`EntryExecutor.run_command` returning with every leg of
every account filled (the command is run directly, as the executor's poll loop would: its poll interval
is not part of the figure). Like ``algomirror engine`` after start-up, the process freezes its start-up
heap out of the garbage collector's full passes before the run (:mod:`algomirror.engine.gc_tuning`).

The floor is computed from the scenario, not measured: the protocol forces four network rounds per
account (place the BUY legs, learn they are filled, place the SELL legs, learn they are filled), each
costing the injected latency, plus whatever waits the exchange's per-key moving-window rate limits
(read from :mod:`algomirror.simulator.ratelimit`) force on one key's calls. Client CPU per order is this
process's ``time.process_time`` over the run (journal writes included) divided by the orders sent; the
event-loop thread's share and the SQL statements per order are printed beside it.
Never fails on timing. The last line is ``fan-out ratio R.RRx floor`` (target ≤ 1.3×).
Usage: ``python bench/fanout.py [--accounts 100] [--latency-ms 20] [--profile FILE]`` (``--profile``:
a cProfile of the event-loop thread over the run; the figures are then slower).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from dashboard import database_url
from sqlalchemy import event, select

from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import Strategy, StrategyExecution, StrategyLeg, TradingAccount, User
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.execution import EntryExecutor
from algomirror.engine.fencing import take_epoch
from algomirror.engine.gc_tuning import freeze_startup_heap
from algomirror.engine.planning import PlannedExecution, plan_run, request_execute
from algomirror.security import SecretBox
from algomirror.simulator.ratelimit import RateLimitConfig, RateLimiter

T0 = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)  # the exchange's manual start: 10:30 IST, market open
EXPIRY = "01DEC26"
IRON_CONDOR = (("BUY", "25500PE"), ("BUY", "26500CE"), ("SELL", "25800PE"), ("SELL", "26200CE"))
LOT = 65

# What one account's entry sends, round by round: (exchange route, calls on the account's key).
ROUNDS = (("placeorder", 2), ("orderstatus", 2), ("placeorder", 2), ("orderstatus", 2))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def paper_exchange(accounts: int, clock: list[str]) -> Iterator[tuple[int, int, list[str], str]]:
    """Start ``algomirror simulator`` with ``accounts`` keys, the ``clock`` options (e.g. ``["--clock",
    "manual"]``), rate limits and the control API on; yield its REST and WebSocket ports, the API keys
    and the control token. Stopped (SIGTERM, then kill) on exit."""
    port, ws_port = _free_port(), _free_port()
    command = [
        sys.executable, "-c", "from algomirror.cli import main; main()", "simulator",
        "--port", str(port), "--ws-port", str(ws_port), "--accounts", str(accounts), *clock, "--control",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        keys: list[str] = []
        token = ""
        deadline = time.monotonic() + 60
        while len(keys) < accounts and time.monotonic() < deadline:
            text = proc.stdout.readline()
            if not text:
                raise RuntimeError("paper exchange exited before printing its API keys")
            if text.startswith("control token"):
                token = text.split()[-1]
            if "apikey" in text:
                keys.append(text.split("apikey", 1)[1].strip())
        if len(keys) < accounts:
            raise RuntimeError("paper exchange did not start within 60 s")
        yield port, ws_port, keys, token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def exchange(accounts: int) -> Iterator[tuple[str, list[str], str]]:
    """Start ``algomirror simulator`` with ``accounts`` keys (manual clock, rate limits on, control API);
    yield its base URL, the API keys and the control token."""
    with paper_exchange(accounts, ["--clock", "manual"]) as (port, _ws_port, keys, token):
        yield f"http://127.0.0.1:{port}", keys, token


def floor_seconds(latency: float) -> tuple[float, float]:
    """(floor, rate-limit waits within it) of one account's entry: :data:`ROUNDS` one after another, each
    call arriving as early as the exchange's moving window for (key, route) admits it and answered
    ``latency`` later. Every account has its own key, so the floor of one is the floor of all."""
    limiter = RateLimiter(RateLimitConfig())
    arrivals: dict[str, deque[float]] = {}
    now = waits = 0.0
    for route, calls in ROUNDS:
        limit = limiter.limit_for(route)
        window = arrivals.setdefault(route, deque())
        last = now
        for _ in range(calls):
            at = now
            while True:
                while window and window[0] <= at - limit.window:
                    window.popleft()
                if len(window) < limit.amount:
                    break
                at = window[0] + limit.window  # wait until the oldest call leaves the window
            window.append(at)
            last = max(last, at)
        waits += last - now
        now = last + latency
    return now, waits


@dataclass
class World:
    """What the run needs: the database, the key box, the fencing epoch, the user, the queued command."""

    database: Database
    box: SecretBox
    epoch: int
    user_id: int
    command_id: int
    run_id: int


def build(url: str, sim_url: str, keys: list[str]) -> World:
    """A user with one account per key, the iron-condor strategy, a planned run of every leg on every
    account and its queued ``execute_run`` command (the few set-up steps of the entry-path tests)."""
    database = Database(url)
    box = SecretBox(Fernet.generate_key())
    with database.session() as s:
        epoch = take_epoch(s, holder="bench:fanout", now=T0)
        user = User(username="bench", email="bench@example.com", password_hash="x")
        s.add(user)
        s.flush()
        accounts = []
        for i, key in enumerate(keys):
            acc = TradingAccount(user_id=user.id, account_name=f"Paper {i + 1}", broker="paper",
                                 host_url=sim_url, api_key_encrypted=box.encrypt(key),
                                 api_key_last4=key[-4:], is_active=True, is_primary=i == 0,
                                 connection_status="connected")  # fmt: skip
            s.add(acc)
            accounts.append(acc)
        strategy = Strategy(user_id=user.id, name="Condor", on_leg_failure="unwind")
        s.add(strategy)
        s.flush()
        legs = []
        for n, (action, strike) in enumerate(IRON_CONDOR, start=1):
            leg = StrategyLeg(strategy_id=strategy.id, leg_number=n, instrument="NIFTY",
                              product_type="options", expiry="current_week", action=action,
                              option_type=strike[-2:],
                              order_type="MARKET", lots=1)  # fmt: skip
            s.add(leg)
            legs.append((leg, f"NIFTY{EXPIRY}{strike}"))
        s.flush()
        planned = [
            PlannedExecution(leg.id, acc.id, symbol, "NFO", "NRML", LOT, "NIFTY")
            for leg, symbol in legs
            for acc in accounts
        ]
        run = plan_run(s, strategy.id, planned, now=T0)
        command = request_execute(s, user_id=user.id, run_id=run.id, token="bench-1")
        return World(database, box, epoch, user.id, command.id, run.id)


@dataclass
class Figures:
    wall: float
    cpu: float
    loop_cpu: float
    statements: int
    orders: int
    filled: int
    legs: int


async def execute(world: World, profile: Path | None = None) -> Figures:
    """Run the queued command to its end; wall and CPU seconds, orders sent, legs filled of all legs.
    ``profile``: write a cProfile of the event-loop thread over the run there."""
    registry = ClientRegistry()
    executor = EntryExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=FakeClock(T0)
    )
    statements = 0

    def count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(world.database.engine, "before_cursor_execute", count)
    try:
        cpu_started, loop_started = time.process_time(), time.thread_time()
        profiler = cProfile.Profile() if profile is not None else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        if not await executor.run_command(world.command_id):
            raise RuntimeError("the execute_run command was not claimed")
        wall = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        cpu, loop_cpu = time.process_time() - cpu_started, time.thread_time() - loop_started
    finally:
        event.remove(world.database.engine, "before_cursor_execute", count)
        await registry.aclose()
    with world.database.session_factory() as s:
        rows = list(s.scalars(select(StrategyExecution).where(StrategyExecution.run_id == world.run_id)))
    filled = sum(1 for r in rows if r.status == "active" and r.filled_quantity == r.planned_quantity)
    orders = sum(len(r.entry_order_ids or []) for r in rows)
    return Figures(wall, cpu, loop_cpu, statements, orders, filled, len(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the event-loop thread here")
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    with (
        tempfile.TemporaryDirectory() as tmp,
        database_url(Path(tmp)) as url,
        exchange(args.accounts) as (sim_url, keys, token),
    ):
        httpx.post(
            f"{sim_url}/sim/faults/latency",
            json={"ms": args.latency_ms},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).raise_for_status()
        world = build(url, sim_url, keys)
        freeze_startup_heap()  # as `algomirror engine` does once it has started (engine/gc_tuning.py)
        print(
            f"database: {url.split('://')[0]}; {args.accounts} accounts x {len(IRON_CONDOR)} legs; "
            f"{args.latency_ms:g} ms injected latency; exchange rate limits on",
            flush=True,
        )
        try:
            fig = asyncio.run(execute(world, args.profile))
        finally:
            world.database.dispose()
    floor, waits = floor_seconds(latency)
    print(f"legs filled            {fig.filled} of {fig.legs} ({fig.orders} orders)")
    print(f"wall, command to filled {fig.wall * 1000:8.1f} ms")
    print(
        f"floor                  {floor * 1000:8.1f} ms  ({len(ROUNDS)} rounds x {args.latency_ms:g} ms"
        f" + {waits * 1000:.1f} ms rate-limit waits)"
    )
    per = max(fig.orders, 1)
    print(f"sql statements per order {fig.statements / per:6.1f}")
    print(
        f"event-loop thread cpu per order {fig.loop_cpu / per * 1000:.3f} ms (the rest ran in worker threads)"
    )
    print(f"client cpu per order   {fig.cpu / per * 1000:8.3f} ms")
    if fig.filled != fig.legs:
        print("WARNING: not every leg filled; the ratio below is not a fan-out figure")
    print(f"fan-out ratio {fig.wall / floor:.2f}x floor")
    return 0 if fig.filled == fig.legs else 1


if __name__ == "__main__":
    sys.exit(main())
