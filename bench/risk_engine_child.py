"""The engine process of bench/risk_latency.py (started by it; not a benchmark of its own).

Runs the engine's ``exits``, ``risk`` and ``feeds`` components (or, with ``--full``, every component
``build_engine`` builds) against the database at ``URL`` on the exchange's simulated clock (the system
clock plus ``--offset`` seconds), until SIGTERM. The API-key Fernet key comes in the environment
(:data:`FERNET_ENV`), not on the command line. ``--stages FILE`` installs the ``--breakdown`` wrappers
(:data:`PROBES`, :data:`PERIODIC`, SQL statements, garbage collections) and writes what they recorded
to FILE on exit; ``--profile FILE`` writes a cProfile of every thread; ``--threads N`` sizes the worker
pool. Prints ``runs N known K`` whenever the risk engine's open runs or those with a known P&L change.
``--cold`` leaves out the order warmer (every exit order may pay a connect).
Usage: ``python bench/risk_engine_child.py URL --offset SECONDS [--full] [--stages FILE] [--profile FILE]
[--threads N] [--cold]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from algomirror.db.session import Database
from algomirror.security import SecretBox

FERNET_ENV = "ALGOMIRROR_BENCH_FERNET"  # the engine child's key: not on its command line


class OffsetClock:
    """The exchange's simulated time as seen from here: the system clock plus a fixed offset (the
    exchange runs ×1, so the offset holds; its steps lag by at most one tick second)."""

    def __init__(self, offset: float) -> None:
        self.offset = timedelta(seconds=offset)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def engine_main(
    url: str,
    offset: float,
    breakdown: str | None,
    profile: str | None,
    threads: int | None,
    full: bool,
    cold: bool = False,
) -> int:
    """The engine process until SIGTERM: exits + risk + feeds under an EngineService, or with ``full``
    every component :func:`build_engine` builds (account sync, reconciler, kill switch, Supertrend, …).
    Both publish on an in-process live bus, as ``algomirror engine`` does without Redis. Prints
    ``runs N known K`` whenever the risk engine's open runs (N) or those with a known P&L (K) change.
    Both keep the at-risk accounts' order connections open (``order_warmer``) unless ``cold``."""
    import logging
    import tempfile

    from algomirror.broker.registry import ClientRegistry
    from algomirror.config import load_settings
    from algomirror.engine.exits import ExitExecutor
    from algomirror.engine.factory import build_engine, find_component
    from algomirror.engine.feeds import FeedManager
    from algomirror.engine.gc_tuning import freeze_startup_heap
    from algomirror.engine.lock import EngineLock
    from algomirror.engine.order_warmer import OrderWarmer
    from algomirror.engine.risk import RiskEngine
    from algomirror.engine.service import EngineService
    from algomirror.live import InProcessBus

    logging.basicConfig(level=logging.WARNING, format="engine: %(levelname)s %(name)s: %(message)s")
    key = os.environ[FERNET_ENV]
    box = SecretBox(key.encode())
    clock = OffsetClock(offset)
    database = Database(url)
    bus = InProcessBus()
    service: EngineService
    if full:
        instance = tempfile.mkdtemp(prefix="risk-latency-engine-")
        settings = load_settings(instance_dir=Path(instance), database_url=url, demo=False, fernet_key=key)
        if cold:
            settings = settings.model_copy(update={"order_warm_seconds": 0.0})
        service = build_engine(settings, database, market_clock=clock, bus=bus)
        exits, risk, feeds = (find_component(service, name) for name in ("exits", "risk", "feeds"))
        if not isinstance(risk, RiskEngine) or not isinstance(feeds, FeedManager):
            raise RuntimeError("build_engine has no risk or feeds component")
    else:
        registry = ClientRegistry()
        lock = EngineLock(database.engine)
        exits = ExitExecutor(database, registry, box.decrypt, epoch=lambda: lock.epoch, market_clock=clock)
        feeds = FeedManager(database, registry, box.decrypt, market_clock=clock, bus=bus)
        risk = RiskEngine(database, feeds.marks, exits=exits, bus=bus, clock=clock)
        components: list[Any] = [exits, risk, feeds]
        if not cold:
            components.append(OrderWarmer(database, exits))
        service = EngineService(
            components,
            lock=lock,
            database=database,
            on_lock_lost=(registry.suspend_orders,),
            on_stopped=(registry.aclose,),
        )
    stages: list[tuple[int, int, str]] = []
    if breakdown:
        install_stage_probes(stages, {c.name: c for c in service.components})

    profilers: list[Any] = []

    def start_profiler() -> None:
        import cProfile

        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if threads or profile:
            from concurrent.futures import ThreadPoolExecutor

            # Profiling: the worker threads too (every database call runs in one of them).
            workers = threads or min(32, (os.cpu_count() or 1) + 4)
            initializer = start_profiler if profile else None
            pool = ThreadPoolExecutor(workers, thread_name_prefix="engine", initializer=initializer)
            loop.set_default_executor(pool)
        loop.add_signal_handler(signal.SIGTERM, service.request_stop)
        served = asyncio.create_task(service.run())
        last: tuple[int, int] | None = None
        frozen = False
        while not served.done():
            state = (len(risk.runs), sum(1 for r in risk.runs.values() if r.last_pnl is not None))
            if state != last:
                last = state
                if state[0] and state[0] == state[1] and not frozen:
                    frozen = freeze_startup_heap()
                print(f"runs {state[0]} known {state[1]}", flush=True)
            await asyncio.wait({served}, timeout=0.05)
        await served

    if profile:
        start_profiler()
    try:
        asyncio.run(main())
    finally:
        if profilers and profile:
            import pstats

            profilers[0].disable()
            merged = pstats.Stats(profilers[0])
            for worker in profilers[1:]:
                merged.add(worker)
            merged.dump_stats(profile)
        if breakdown:
            Path(breakdown).write_text(json.dumps(stages))
        database.dispose()
    return 0


#: The engine's steps of a breach that ``--breakdown`` times: (stage, where, attribute, what it is).
PROBES = (
    ("feed", "feeds", "_on_tick", "tick read by the feed (FeedManager._on_tick)"),
    ("fire", "risk", "fire", "rule fired (RiskEngine.fire)"),
    ("breach", "risk", "_write_breach", "breach transaction (RiskEngine._write_breach, worker thread)"),
    ("command", "exits", "run_command", "exit command (ExitExecutor.run_command)"),
    ("scope", "exits", "exit_scope", "exit scope (ExitExecutor.exit_scope)"),
    ("targets", "exits", "_targets", "target_states (read; only for a scope without a run: exit all, a leg)"),
    ("run_now", "exits", "_run_now", "targets, plan and stuck shorts (one read, under the run's lock)"),
    ("claim_first", "exits", "claim_first_exits", "claim_first_exits (the fast first attempt's write)"),
    ("claim_exit", "exit_work", "claim_exit", "claim_exit, per leg (write)"),
    ("read_state", "exit_work", "read_state", "read_state, per leg (read)"),
    ("exit_intents", "exit_work", "exit_intents", "exit_intents, 3 per leg (read)"),
    ("record", "work", "_record", "ExitWork._record, per leg (write + read)"),
    ("claim_send", "journal", "claim_send", "Journal.claim_send, per order (write)"),
    ("send", "client", "place_order", "order handed to the client (OpenAlgoClient.place_order)"),
)
#: The engine's periodic work, timed by ``--breakdown`` to see what the slowest breaches met.
PERIODIC = (
    ("risk_sweep", "risk", "sweep", "RiskEngine.sweep (every 0.5 s; reloads every 2 s)"),
    ("risk_load", "risk", "load", "RiskEngine.load"),
    ("risk_persist", "risk", "_persist", "RiskEngine._persist (every 1 s, worker thread)"),
    ("order_warmer", "order_warmer", "_ping", "OrderWarmer._ping (a round of pings)"),
    ("feed_refresh", "feeds", "refresh_once", "FeedManager.refresh_once (every 3 s)"),
    ("feed_row", "feeds", "_write_connection", "FeedManager._write_connection (heartbeat, 5 s)"),
    ("exit_poll", "exits", "process_once", "ExitExecutor.process_once (its command poll)"),
    # --full only (the components build_engine adds):
    ("sync", "account-sync", "_cycle", "AccountSync._cycle (one account's books, every 5 s)"),
    ("reconcile", "reconciliation", "reconcile_account", "Reconciler.reconcile_account"),
    ("kill_switch", "kill_switch", "check", "KillSwitch.check"),
    ("supertrend", "supertrend", "step", "Supertrend rule step"),
    ("chain", "chain", "cycle", "ChainEngine.cycle"),
    ("lock_check", "lock", "check", "EngineLock.check (the service's watchdog: every 0.25 s, 2 s deadline)"),
)


def install_stage_probes(stages: list[tuple[int, int, str]], components: dict[str, Any]) -> None:
    """Wrap the engine's steps of a breach (:data:`PROBES`) and its periodic work (:data:`PERIODIC`, of
    the ``components`` by name that exist) to record ``(start ns, end ns, stage)`` (``--breakdown``);
    the feed's ticks only for the options (the index ticks every second)."""
    from algomirror.broker.client import OpenAlgoClient
    from algomirror.engine import exit_work
    from algomirror.engine.exit_work import ExitWork
    from algomirror.engine.journal import Journal
    from algomirror.engine.lock import EngineLock

    owners = {**components, "exit_work": exit_work, "work": ExitWork, "journal": Journal,
              "lock": EngineLock, "client": OpenAlgoClient}  # fmt: skip

    def probe(owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)
        if asyncio.iscoroutinefunction(original):

            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                began = time.monotonic_ns()
                try:
                    return await original(*args, **kwargs)
                finally:
                    stages.append((began, time.monotonic_ns(), stage))

            setattr(owner, name, wrapped_async)
            return

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            began = time.monotonic_ns()
            try:
                return original(*args, **kwargs)
            finally:
                if stage != "feed" or args[1].exchange == "NFO":
                    stages.append((began, time.monotonic_ns(), stage))

        setattr(owner, name, wrapped)

    for stage, where, name, _ in (*PROBES, *PERIODIC):
        if where in owners:
            probe(owners[where], name, stage)

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        now = time.monotonic_ns()
        stages.append((now, now, "sql:" + statement_kind(sql)))

    event.listen(components["feeds"].database.engine, "before_cursor_execute", statement)

    collecting: list[int] = []

    def collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting.append(time.monotonic_ns())
        elif collecting:
            stages.append((collecting.pop(), time.monotonic_ns(), f"gc{info.get('generation', '?')}"))

    gc.callbacks.append(collection)


def statement_kind(sql: str) -> str:
    """``SELECT strategy_executions``: a statement's verb and first table (for ``--breakdown``)."""
    words = sql.replace("(", " ").replace('"', "").split()
    verb = words[0].upper() if words else "?"
    marker = {"SELECT": "FROM", "INSERT": "INTO", "DELETE": "FROM", "UPDATE": "UPDATE"}.get(verb)
    upper = [w.upper() for w in words]
    if marker is not None and marker in upper:
        index = upper.index(marker) + 1
        if index < len(words):
            return f"{verb} {words[index]}"
    return verb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--offset", type=float, required=True)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--stages")
    parser.add_argument("--profile")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--cold", action="store_true")
    args = parser.parse_args()
    return engine_main(args.url, args.offset, args.stages, args.profile, args.threads, args.full, args.cold)


if __name__ == "__main__":
    sys.exit(main())
