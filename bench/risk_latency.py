"""Risk latency benchmark: ticks through max-loss thresholds of 1,000 open executions on 50 paper accounts.

Three processes on loopback. The paper exchange (``algomirror simulator``: accelerated clock at ×1 from
Wed 25 Nov 2026 10:30 IST, so the market is open and its GBM ticks every second; per-key rate limits on;
its timing trace on, :mod:`algomirror.simulator.trace`). The engine, a child process
(``bench/risk_engine_child.py``) running the engine's real ``exits``, ``risk`` and ``feeds`` components
(:class:`ExitExecutor`, :class:`RiskEngine`, :class:`FeedManager` on one :class:`ClientRegistry` under an
:class:`EngineService` with its lock, as ``build_engine`` wires them, on an in-process live bus; its
start-up heap frozen as ``algomirror engine`` does; ``--full``: every component ``build_engine`` builds).
And this script, which seeds the database and drives prices.

Seeding (directly in the database: SQLite in a temp dir, or a private database on the PostgreSQL server
of ``--database`` or ``ALGOMIRROR_BENCH_PG``, see bench/dashboard.py): one user with
``--accounts`` accounts (the first primary: its WebSocket is the feed), ``--strategies`` strategies of one
short out-of-the-money NIFTY option each (calls above the spot, puts below; a different strike per
strategy), and one open run per strategy with an ``active`` execution on every account (one lot, entered
at the exchange's LTP; the same SELL is placed at the exchange first, so the broker's books match), max
loss ₹``--loss-per-unit`` × lot × accounts on the strategy's combined P&L.

One move per strategy, one after another: ``POST /sim/price`` sets the strategy's option to entry +
2 × ``--loss-per-unit`` (the background drift of those strikes over the run is a few rupees), then the
script waits until the run is closed. From the exchange's trace: **the breaching tick** is the first
market-data frame of that symbol at or beyond the threshold (entry + loss per unit) after the move,
stamped as it left the WebSocket; **first exit** = the first ``placeorder`` of that symbol arriving;
**last exit** = the last of the strategy's one-per-account orders. ``--rounds`` re-seeds all runs and
repeats, for more breaches. Every breach must give exactly one BUY order per account for its symbol
and none for any other; a breach before its move is reported (drift) and left out.

Printed: p50/p99/max of tick → first exit order and tick → last exit order; the engine process's RSS
(``/proc/<pid>/status`` VmRSS after the last move, VmHWM its peak) and its CPU time during the moves.
``--breakdown`` also times the engine's stages of each breach (:data:`PROBES`: tick read by the feed,
rule fired, breach transaction, exit command, the exit's per-leg database calls, first order handed to
the client), from wrappers installed in the engine process (the clocks agree: ``time.monotonic_ns`` is
system-wide on Linux), counts its SQL statements by kind and lists the periodic work and garbage
collections the slowest breaches met; the wrappers slow the path by about a fifth. ``--profile``
writes a cProfile of all the engine's threads (event loop and worker pool) and prints its top
entries; ``--threads N`` sizes the engine's worker pool; ``--cold`` leaves out its order warmer
(an exit order may then pay a TCP connect). Never fails on timing.
The last line is ``risk p99 X.X ms, rss N MB`` (targets: p99 < 10 ms, RSS < 300 MB).
Usage: ``python bench/risk_latency.py [--quick] [--accounts 50] [--strategies 20] [--rounds 2]
[--database postgresql+psycopg://…] [--breakdown] [--profile FILE] [--threads N] [--cold]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography.fernet import Fernet
from dashboard import database_url
from fanout import paper_exchange
from risk_engine_child import FERNET_ENV, PERIODIC, PROBES, OffsetClock
from sqlalchemy import select, update

from algomirror.db.models import Strategy, StrategyExecution, StrategyLeg, StrategyRun, TradingAccount, User
from algomirror.db.session import Database
from algomirror.engine.planning import PlannedExecution, plan_run
from algomirror.security import SecretBox

START = "2026-11-25T10:30:00+05:30"  # a normal trading day, market open
EXPIRY = "01DEC26"
LOT = 65
SPOT = 26000


@dataclass(frozen=True)
class Exchange:
    url: str
    ws_url: str
    keys: list[str]
    token: str

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One control call; raises httpx.HTTPStatusError on a refusal."""
        reply = httpx.request(
            method,
            f"{self.url}/sim/{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data

    def ltp(self, symbol: str) -> Decimal:
        """The NFO symbol's LTP (₹) from the exchange's ``quotes``."""
        reply = httpx.post(
            f"{self.url}/api/v1/quotes",
            json={"apikey": self.keys[0], "symbol": symbol, "exchange": "NFO"},
            timeout=30,
        )
        reply.raise_for_status()
        return Decimal(str(reply.json()["data"]["ltp"]))


@contextmanager
def exchange(accounts: int) -> Iterator[Exchange]:
    """``algomirror simulator`` with ``accounts`` keys, accelerated ×1 from :data:`START`, control on."""
    clock = ["--clock", "accelerated", "--speed", "1", "--start", START]
    with paper_exchange(accounts, clock) as (port, ws_port, keys, token):
        yield Exchange(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{ws_port}", keys, token)


def clock_offset(ex: Exchange) -> float:
    """Seconds from this machine's clock to the exchange's simulated one."""
    simulated = datetime.fromisoformat(ex.control("GET", "state")["now"])
    return (simulated - datetime.now(UTC)).total_seconds()


# ------------------------------------------------------------------------------------------ seeding


@dataclass
class Book:
    """The seeded world: the accounts, (strategy id, leg id, symbol) per strategy, and the max loss per
    unit (₹) every strategy's threshold is made of."""

    database: Database
    user_id: int
    account_ids: list[int]
    strategies: list[tuple[int, int, str]] = field(default_factory=list)
    loss_per_unit: Decimal = Decimal(25)


def strikes(count: int) -> list[str]:
    """``count`` out-of-the-money NIFTY options, alternating calls above and puts below the spot."""
    symbols = []
    for i in range(count):
        step = 500 + 50 * (i // 2)
        kind = "CE" if i % 2 == 0 else "PE"
        strike = SPOT + step if kind == "CE" else SPOT - step
        symbols.append(f"NIFTY{EXPIRY}{strike}{kind}")
    return symbols


def seed_world(database: Database, ex: Exchange, box: SecretBox, strategies: int, loss: Decimal) -> Book:
    """The user, one account per exchange key (the first primary) and ``strategies`` one-leg short
    strategies with max loss ``loss`` ₹ × lot × accounts (no runs yet)."""
    with database.session() as s:
        user = User(username="bench", email="bench@example.com", password_hash="x")
        s.add(user)
        s.flush()
        accounts = []
        for i, key in enumerate(ex.keys):
            acc = TradingAccount(user_id=user.id, account_name=f"Paper {i + 1}", broker="paper",
                                 host_url=ex.url, websocket_url=ex.ws_url, api_key_encrypted=box.encrypt(key),
                                 api_key_last4=key[-4:], is_active=True, is_primary=i == 0,
                                 connection_status="connected")  # fmt: skip
            s.add(acc)
            accounts.append(acc)
        s.flush()
        book = Book(database, user.id, [a.id for a in accounts], loss_per_unit=loss)
        threshold = loss * LOT * len(accounts)
        for symbol in strikes(strategies):
            strategy = Strategy(user_id=user.id, name=f"Short {symbol}", max_loss=threshold,
                                on_leg_failure="unwind")  # fmt: skip
            s.add(strategy)
            s.flush()
            leg = StrategyLeg(strategy_id=strategy.id, leg_number=1, instrument="NIFTY",
                              product_type="options", expiry="current_week", action="SELL",
                              option_type=symbol[-2:], order_type="MARKET", lots=1)  # fmt: skip
            s.add(leg)
            s.flush()
            book.strategies.append((strategy.id, leg.id, symbol))
    return book


async def sell_at_exchange(ex: Exchange, symbols: list[str]) -> None:
    """One SELL MARKET lot of every symbol on every account at the exchange, so that the broker's books
    hold what the seeded executions say (the reconciler of ``--full`` compares them). Paced under the
    exchange's 10 orders/s per key. Raises RuntimeError for a refused order."""

    async def account(client: httpx.AsyncClient, key: str) -> None:
        for symbol in symbols:
            reply = await client.post(
                f"{ex.url}/api/v1/placeorder",
                json={
                    "apikey": key,
                    "strategy": "bench-entry",
                    "symbol": symbol,
                    "action": "SELL",
                    "exchange": "NFO",
                    "pricetype": "MARKET",
                    "product": "NRML",
                    "quantity": str(LOT),
                },
            )
            if reply.json().get("status") != "success":
                raise RuntimeError(f"entry order refused: {reply.text[:200]}")
            await asyncio.sleep(0.125)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(account(client, key) for key in ex.keys))


def open_runs(book: Book, ex: Exchange, now: datetime) -> dict[int, tuple[int, Decimal]]:
    """A new open run per strategy, entered on every account (at the exchange too, then forgotten by
    the trace) at the symbol's LTP now; strategy id → (run id, entry price)."""
    result: dict[int, tuple[int, Decimal]] = {}
    asyncio.run(sell_at_exchange(ex, [symbol for _, _, symbol in book.strategies]))
    ex.control("GET", "trace")  # the entries are not exits
    entries = {symbol: ex.ltp(symbol) for _, _, symbol in book.strategies}
    with book.database.session() as s:
        for strategy_id, leg_id, symbol in book.strategies:
            planned = [
                PlannedExecution(leg_id, account_id, symbol, "NFO", "NRML", LOT, "NIFTY")
                for account_id in book.account_ids
            ]
            run = plan_run(s, strategy_id, planned, now=now)
            s.flush()
            run.status = "active"
            run.entry_completed_at = now
            s.execute(
                update(StrategyExecution)
                .where(StrategyExecution.run_id == run.id)
                .values(status="active", filled_quantity=LOT, entry_price=entries[symbol], entry_time=now)
                .execution_options(synchronize_session=False)
            )
            result[strategy_id] = (run.id, entries[symbol])
    return result


def run_ended(database: Database, run_id: int) -> bool:
    """Whether the run is closed (``ended_at`` set)."""
    with database.session_factory() as s:
        return s.scalar(select(StrategyRun.ended_at).where(StrategyRun.id == run_id)) is not None


@dataclass
class EngineProcess:
    proc: subprocess.Popen[str]
    state: tuple[int, int] = (0, 0)
    changed: threading.Condition = field(default_factory=threading.Condition)
    lines: list[str] = field(default_factory=list)

    def follow(self, stream: IO[str]) -> None:
        for text in stream:
            with self.changed:
                if text.startswith("runs "):
                    parts = text.split()
                    self.state = (int(parts[1]), int(parts[3]))
                else:
                    self.lines.append(text.rstrip())
                self.changed.notify_all()

    def wait_for(self, runs: int, timeout: float = 60.0) -> None:
        """Until the risk engine holds ``runs`` open runs, each with a known P&L."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.state != (runs, runs):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"engine not ready: {self.state} of {runs} runs; {self.lines[-5:]}")
                self.changed.wait(left)

    def status(self) -> dict[str, int]:
        """VmRSS / VmHWM in kB from /proc."""
        values: dict[str, int] = {}
        for text in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, rest = text.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
        return values

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def engine_process(url: str, key: bytes, offset: float, extra: list[str]) -> Iterator[EngineProcess]:
    child = Path(__file__).resolve().with_name("risk_engine_child.py")
    command = [sys.executable, str(child), url, "--offset", str(offset), *extra]
    env = {**os.environ, FERNET_ENV: key.decode()}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    engine = EngineProcess(proc)
    assert proc.stdout is not None
    reader = threading.Thread(target=engine.follow, args=(proc.stdout,), daemon=True)
    reader.start()
    try:
        yield engine
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Breach:
    symbol: str
    tick_ns: int
    first_ns: int
    last_ns: int
    orders: int
    accounts: int

    @property
    def first_ms(self) -> float:
        return (self.first_ns - self.tick_ns) / 1e6

    @property
    def last_ms(self) -> float:
        return (self.last_ns - self.tick_ns) / 1e6


@dataclass
class Outcome:
    breaches: list[Breach] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def measure_move(
    ex: Exchange, book: Book, run_id: int, symbol: str, entry: Decimal, accounts: int, outcome: Outcome
) -> None:
    """Push ``symbol`` through its threshold, wait for the run to close, read the trace."""
    earlier = ex.control("GET", "trace")["events"]
    if any(e["kind"] == "order" for e in earlier):
        outcome.problems.append(
            f"{symbol}: orders before its move: {sum(e['kind'] == 'order' for e in earlier)}"
        )
    if run_ended(book.database, run_id):
        outcome.problems.append(f"{symbol}: run {run_id} closed before its move (drift); left out")
        return
    threshold = float(entry + book.loss_per_unit)
    ex.control(
        "POST", "price", {"symbol": symbol, "exchange": "NFO", "price": str(entry + 2 * book.loss_per_unit)}
    )
    deadline = time.monotonic() + 60
    while not run_ended(book.database, run_id):
        if time.monotonic() > deadline:
            outcome.problems.append(f"{symbol}: run {run_id} not closed 60 s after its move")
            break
        time.sleep(0.05)
    trace = ex.control("GET", "trace")
    if trace["dropped"]:
        outcome.problems.append(f"{symbol}: the trace dropped {trace['dropped']} events")
    events = trace["events"]
    ticks = [e for e in events if e["kind"] == "tick" and e["symbol"] == symbol and e["ltp"] >= threshold]
    orders = [e for e in events if e["kind"] == "order"]
    mine = [e for e in orders if e["symbol"] == symbol]
    others = [e for e in orders if e["symbol"] != symbol]
    if others:
        outcome.problems.append(f"{symbol}: {len(others)} orders for other symbols during its move")
    keys = {e["key"] for e in mine}
    if len(mine) != accounts or len(keys) != accounts or any(e["action"] != "BUY" for e in mine):
        outcome.problems.append(f"{symbol}: {len(mine)} orders from {len(keys)} accounts (want one each)")
    if not ticks or not mine:
        outcome.problems.append(f"{symbol}: no breaching tick or no exit order in the trace")
        return
    outcome.breaches.append(
        Breach(symbol, ticks[0]["ns"], mine[0]["ns"], mine[-1]["ns"], len(mine), len(keys))
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):7.1f} ms, p99 {percentile(values, 99):7.1f} ms, "
        f"max {max(values):7.1f} ms"
    )


def print_breakdown(path: Path, breaches: list[Breach]) -> None:
    """Per engine stage, over the breaches (medians): when its first call started and ended after the
    breaching tick left the exchange, its calls and their summed time, and when it started in the
    slowest breach (``--breakdown``)."""
    stages = [(int(a), int(b), str(c)) for a, b, c in json.loads(path.read_text())]
    print("breakdown, ms after the breaching tick left the exchange (medians over the breaches):")
    print(f"  {'first starts':>12} {'first ends':>10} {'calls':>6} {'summed':>8} {'slowest':>8}  stage")
    worst = max(breaches, key=lambda b: b.first_ms)
    for stage, _, _, text in PROBES:
        starts, ends, calls, summed = [], [], [], []
        slowest = float("nan")
        for b in breaches:
            # A frame can be read before the exchange stamps it (send_str returned): allow 5 ms before.
            window = [s for s in stages if s[2] == stage and b.tick_ns - 5_000_000 <= s[0] <= b.last_ns]
            if not window:
                continue
            starts.append((window[0][0] - b.tick_ns) / 1e6)
            ends.append((window[0][1] - b.tick_ns) / 1e6)
            calls.append(len(window) if stage != "feed" else 1)
            summed.append(sum(e - s for s, e, _ in window) / 1e6)
            if b is worst:
                slowest = starts[-1]
        if starts:
            print(
                f"  {statistics.median(starts):12.2f} {statistics.median(ends):10.2f} "
                f"{statistics.median(calls):6.0f} {statistics.median(summed):8.2f} {slowest:8.2f}  {text}"
            )
    print(
        f"  {statistics.median(b.first_ms for b in breaches):12.2f} {'':>10} {'':>6} {'':>8} "
        f"{worst.first_ms:8.2f}  "
        "first exit order arrived at the exchange"
    )

    print("  periodic work and collections (gcN) overlapping tick -> first exit order, 5 slowest breaches:")
    periodic = {name for name, *_ in PERIODIC}
    for b in sorted(breaches, key=lambda b: b.first_ms)[-5:]:
        met: dict[str, list[float]] = {}
        for s, e, stage in stages:
            if (stage in periodic or stage.startswith("gc")) and s <= b.first_ns and e >= b.tick_ns:
                met.setdefault(stage, []).append((e - s) / 1e6)
        text = ", ".join(f"{k} x{len(v)} (longest {max(v):.1f} ms)" for k, v in sorted(met.items()))
        print(f"    {b.first_ms:7.1f} ms  {b.symbol}: {text or 'none'}")

    checks = sorted(s for s, _, stage in stages if stage == "lock_check")
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(checks)]
    if gaps:
        print(
            f"  lock watchdog: {len(checks)} checks, longest gap between two {max(gaps):.0f} ms "
            f"(median {statistics.median(gaps):.0f} ms; the service gives up after 2,000 ms)"
        )

    def sql_between(b: Breach, end: int) -> list[str]:
        return [s[2][4:] for s in stages if s[2].startswith("sql:") and b.tick_ns <= s[0] <= end]

    before_first = [len(sql_between(b, b.first_ns)) for b in breaches]
    before_last = [len(sql_between(b, b.last_ns)) for b in breaches]
    print(
        "  SQL statements from the tick to the first / last exit order: "
        f"{statistics.median(before_first):.0f} / {statistics.median(before_last):.0f} (medians); "
        "before the first, per breach:"
    )
    kinds: dict[str, int] = {}
    for b in breaches:
        for kind in sql_between(b, b.first_ns):
            kinds[kind] = kinds.get(kind, 0) + 1
    for kind, count in sorted(kinds.items(), key=lambda item: -item[1])[:12]:
        print(f"    {count / len(breaches):7.1f}  {kind}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--strategies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="re-seed every run and repeat the moves")
    parser.add_argument("--loss-per-unit", type=Decimal, default=Decimal(25), help="₹ per unit of max loss")
    parser.add_argument("--quick", action="store_true", help="10 accounts x 10 strategies, one round")
    parser.add_argument("--database", help="a PostgreSQL server URL (a private database is created)")
    parser.add_argument("--breakdown", action="store_true", help="time the engine's stages of a breach")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the engine (all threads) here")
    parser.add_argument(
        "--threads", type=int, help="the engine's default thread pool (asyncio's: min(32, cores + 4))"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="run every engine component build_engine builds, not only exits/risk/feeds",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="without the order warmer: an exit order may pay a connect (the code before 4 Dec 2026)",
    )
    args = parser.parse_args()
    if args.quick:
        args.accounts, args.strategies, args.rounds = 10, 10, 1
    if args.database:
        os.environ["ALGOMIRROR_BENCH_PG"] = args.database
    key = Fernet.generate_key()
    box = SecretBox(key)
    outcome = Outcome()
    with (
        tempfile.TemporaryDirectory() as tmp,
        database_url(Path(tmp)) as url,
        exchange(args.accounts) as ex,
    ):
        ex.control("POST", "trace", {"enabled": True})
        database = Database(url)
        try:
            book = seed_world(database, ex, box, args.strategies, args.loss_per_unit)
            offset = clock_offset(ex)
            clock = OffsetClock(offset)
            runs = open_runs(book, ex, clock.now())
            extra = ["--stages", str(Path(tmp) / "stages.json")] if args.breakdown else []
            if args.profile:
                extra += ["--profile", str(args.profile)]
            if args.threads:
                extra += ["--threads", str(args.threads)]
            if args.full:
                extra.append("--full")
            if args.cold:
                extra.append("--cold")
            executions = args.accounts * args.strategies
            print(
                f"database: {url.split('://')[0]}; {executions} open executions ({args.strategies} strategies"
                f" x {args.accounts} accounts x 1 leg); {args.rounds} round(s) of {args.strategies} moves; "
                f"exchange rate limits on; engine: "
                f"{'every build_engine component' if args.full else 'exits + risk + feeds'}"
                f"{' (cold: no order warmer)' if args.cold else ' + order warmer'}",
                flush=True,
            )
            with engine_process(url, key, offset, extra) as engine:
                engine.wait_for(len(runs))
                cpu_started = engine.cpu_seconds()
                for round_number in range(args.rounds):
                    if round_number:
                        runs = open_runs(book, ex, clock.now())
                        engine.wait_for(len(runs))
                    for strategy_id, _, symbol in book.strategies:
                        run_id, entry = runs[strategy_id]
                        measure_move(ex, book, run_id, symbol, entry, args.accounts, outcome)
                cpu = engine.cpu_seconds() - cpu_started
                memory = engine.status()
            for text in engine.lines:
                print(text)
        finally:
            database.dispose()
        stages_path = Path(tmp) / "stages.json"
        if args.breakdown and stages_path.exists() and outcome.breaches:
            print_breakdown(stages_path, outcome.breaches)
    for problem in outcome.problems:
        print(f"WARNING: {problem}")
    if not outcome.breaches:
        print("no breach measured")
        return 1
    first = [b.first_ms for b in outcome.breaches]
    last = [b.last_ms for b in outcome.breaches]
    print(f"breaches measured      {len(outcome.breaches)} ({args.accounts} exit orders each)")
    print(f"tick -> first exit order: {spread(first)}")
    print(f"tick -> last exit order:  {spread(last)} (the strategy's {args.accounts} accounts)")
    slowest = ", ".join(f"{v:.1f}" for v in sorted(first)[-5:])
    print(f"slowest tick -> first exit order: {slowest} ms")
    print(f"in the order measured: {', '.join(f'{v:.1f}' for v in first)} ms")
    rss, peak = memory.get("VmRSS", 0) // 1024, memory.get("VmHWM", 0) // 1024
    print(f"engine rss {rss} MB (peak {peak} MB); engine cpu {cpu:.2f} s during the moves")
    if args.profile:
        import pstats

        print(f"engine profile, loop and worker threads ({args.profile}), top 30 by internal time:")
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(30)
    print(f"risk p99 {percentile(first, 99):.1f} ms, rss {rss} MB")
    return 0 if not outcome.problems else 1


if __name__ == "__main__":
    sys.exit(main())
