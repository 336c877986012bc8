"""Dashboard benchmark: 100 accounts of synthetic data, 20 concurrent users on the dashboard and positions
pages and their live fragments, served by waitress on loopback.

Data: one user with ``--accounts`` accounts, each with a funds row, ``--positions`` positions and
``--orders`` orders (defaults 100 × 20 × 30: 2,000 positions, 3,000 orders), in SQLite in a temp dir, or
in a private database on the PostgreSQL server of ``ALGOMIRROR_BENCH_PG`` (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) when that is set.

Load: ``--users`` threads, each signed in with its own keep-alive HTTP connection, behave like a browser
tab: open the dashboard, let it poll its live fragment three times, open the positions page, let it poll
three times, and so on. Phase 1 ("browser pace") waits 0.5–1.5 × ``--poll`` seconds (default 3 s, what
the pages use) between requests; phase 2 ("saturation") sends requests back to back for ``--burst``
seconds to show the ceiling (requests/s) of one waitress process.

Prints p50/p95/p99 per request kind and overall, and requests/s. Target (docs/benchmarks.md): p95 < 150 ms.
Never fails on timing; exits 1 only if requests fail. The app's global and sign-in per-IP rate limits are
raised for the run (all simulated users share 127.0.0.1).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from waitress.server import create_server

from algomirror.config import Settings, load_settings
from algomirror.db.migrate import upgrade_url
from algomirror.db.models import AccountFunds, Order, Position, TradingAccount
from algomirror.db.session import Database
from algomirror.domain.timeutil import utcnow
from algomirror.security import make_password_hasher
from algomirror.web import create_app
from algomirror.web.auth.service import create_user

USERNAME = "bench"
PASSWORD = "load-test-secret-phrase-2026"
TOKEN_RE = re.compile(r'name="csrf-token" content="([^"]+)"')
VISIT = (
    ("dashboard", "/", False),
    ("dashboard live", "/dashboard/live", True),
    ("dashboard live", "/dashboard/live", True),
    ("dashboard live", "/dashboard/live", True),
    ("positions", "/positions", False),
    ("positions live", "/positions/live", True),
    ("positions live", "/positions/live", True),
    ("positions live", "/positions/live", True),
)


@contextmanager
def database_url(tmp: Path) -> Iterator[str]:
    """A migrated empty database: SQLite in ``tmp``, or a private PostgreSQL database (dropped after)."""
    server = os.environ.get("ALGOMIRROR_BENCH_PG")
    if not server:
        url = f"sqlite:///{tmp / 'bench.db'}"
        upgrade_url(url, "head")
        yield url
        return
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"am_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_url(url, "head")
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def bench_settings(url: str, instance_dir: str) -> Settings:
    # All simulated users share 127.0.0.1: the per-IP global and sign-in limits would throttle them.
    return load_settings(
        instance_dir=Path(instance_dir),
        database_url=url,
        demo=False,
        ratelimit_global="1000000 per minute",
        ratelimit_auth="1000 per minute",
    )


def serve(url: str, instance_dir: str, threads: int, ports: multiprocessing.Queue[int]) -> None:
    """Child process: the web app on waitress at an ephemeral loopback port (sent back on ``ports``)."""
    settings = bench_settings(url, instance_dir)
    app = create_app(settings, database=Database(url, settings))
    # waitress logs every queued request under load ("Task queue depth is N"): noise here.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(app, host="127.0.0.1", port=0, threads=threads)
    ports.put(int(server.effective_port))  # type: ignore[union-attr]
    server.run()


def seed(database: Database, accounts: int, positions: int, orders: int) -> None:
    rng = random.Random(7)
    now = utcnow()
    with database.session() as s:
        hasher = make_password_hasher(cheap=True)
        user = create_user(s, hasher, username=USERNAME, email="bench@example.com", password=PASSWORD)
        s.flush()
        s.execute(
            insert(TradingAccount),
            [
                {
                    "user_id": user.id,
                    "account_name": f"Account {i:03d}",
                    "broker": "paper",
                    "is_primary": i == 0,
                    "is_active": True,
                    "connection_status": "connected" if i % 10 else "error",
                    "last_error": None if i % 10 else "timed out after 8 s",
                    "last_sync_at": now - timedelta(seconds=i % 15),
                    "created_at": now - timedelta(days=1, seconds=-i),
                }
                for i in range(accounts)
            ],
        )
        ids = [r[0] for r in s.execute(text("SELECT id FROM trading_accounts ORDER BY id")).all()]

        def money(low: int, high: int) -> Decimal:
            return Decimal(rng.randint(low * 100, high * 100)) / 100

        s.execute(
            insert(AccountFunds),
            [
                {
                    "account_id": aid,
                    "available_cash": money(10_000, 5_000_000),
                    "collateral": money(0, 1_000_000),
                    "utilised_debits": money(0, 500_000),
                    "m2m_realized": money(-50_000, 50_000),
                    "m2m_unrealized": money(-50_000, 50_000) if aid % 7 else None,
                    "fetched_at": now,
                }
                for aid in ids
            ],
        )
        s.execute(
            insert(Position),
            [
                {
                    "account_id": aid,
                    "symbol": f"NIFTY01DEC26{25000 + 50 * p}{'CE' if p % 2 else 'PE'}",
                    "exchange": "NFO",
                    "product": "NRML",
                    "quantity": rng.choice([-150, -75, 0, 75, 150]),
                    "average_price": money(10, 400),
                    "ltp": money(10, 400),
                    "pnl": money(-20_000, 20_000) if p % 9 else None,
                    "realized_pnl": money(-5_000, 5_000),
                    "unrealized_pnl": money(-20_000, 20_000),
                }
                for aid in ids
                for p in range(positions)
            ],
        )
        statuses = ["complete"] * 6 + ["open", "trigger_pending", "cancelled", "rejected"]
        s.execute(
            insert(Order),
            [
                {
                    "account_id": aid,
                    "order_id": f"{aid:04d}{o:06d}",
                    "symbol": f"NIFTY01DEC26{25000 + 50 * (o % positions)}CE",
                    "exchange": "NFO",
                    "action": rng.choice(["BUY", "SELL"]),
                    "quantity": 75,
                    "order_type": "LIMIT",
                    "price": money(10, 400),
                    "product": "NRML",
                    "status": rng.choice(statuses),
                    "filled_quantity": 0,
                    "placed_at": now - timedelta(minutes=o),
                }
                for aid in ids
                for o in range(orders)
            ],
        )


def sign_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30.0, follow_redirects=False)
    page = client.get("/login")
    match = TOKEN_RE.search(page.text)
    assert match, "no csrf token on /login"
    reply = client.post(
        "/login", data={"username": USERNAME, "password": PASSWORD, "csrf_token": match.group(1)}
    )
    if reply.status_code != 303:
        raise SystemExit(f"login failed: {reply.status_code} {reply.text[:200]}")
    return client


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=float, default=16.0, help="phase 1 length (s)")
    parser.add_argument(
        "--poll", type=float, default=3.0, help="phase 1 mean seconds between a user's requests"
    )
    parser.add_argument("--burst", type=float, default=6.0, help="phase 2 length (s); 0 skips it")
    parser.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir, database_url(Path(tmpdir)) as url:
        tmp = Path(tmpdir)
        settings = bench_settings(url, str(tmp / "instance"))
        database = Database(url, settings)
        started = time.perf_counter()
        seed(database, args.accounts, args.positions, args.orders)
        database.dispose()
        backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
        print(
            f"seeded {backend}: {args.accounts} accounts, {args.accounts * args.positions} positions, "
            f"{args.accounts * args.orders} orders in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        # The server runs in its own process: load-generator threads must not share its GIL.
        context = multiprocessing.get_context("spawn")
        ports: multiprocessing.Queue[int] = context.Queue()
        server = context.Process(
            target=serve, args=(url, str(tmp / "instance"), args.threads, ports), daemon=True
        )
        server.start()
        base = f"http://127.0.0.1:{ports.get(timeout=30)}"
        clients = [sign_in(base) for _ in range(args.users)]
        for client in clients[:2]:  # warm caches (templates, compiled SQL)
            for _, path, hx in VISIT:
                client.get(path, headers={"HX-Request": "true"} if hx else None)

        print(
            f"phase 1: {args.users} users at browser pace (0.5–1.5 × {args.poll:g} s), {args.duration:g} s",
            flush=True,
        )
        pace = run_phase(clients, args.duration, args.poll)
        burst = run_phase(clients, args.burst, 0.0) if args.burst > 0 else None
        for client in clients:
            client.close()
        server.terminate()
        server.join(10)

    failures = report("phase 1: browser pace", pace, args.users)
    if burst is not None:
        failures += report("phase 2: saturation (no think time)", burst, args.users)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nwaitress threads {args.threads}, Python {sys.version.split()[0]}, {backend}, "
        f"{os.cpu_count()} CPUs, load average {load} (other work on this machine inflates latencies)"
    )
    p95 = percentile(sorted(v for values in pace.samples.values() for v in values), 95)
    print(f"target p95 < 150 ms at browser pace: {'met' if p95 < 150 else 'MISSED'} (p95 {p95:.1f} ms)")
    return 1 if failures else 0


class Phase:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.wall = 0.0


def run_phase(clients: list[httpx.Client], duration: float, poll: float) -> Phase:
    """Every client runs the VISIT loop until ``duration`` is over; ``poll`` = mean wait between requests."""
    phase = Phase()
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def user(client: httpx.Client, seed_value: int) -> None:
        rng = random.Random(seed_value)
        step = rng.randrange(len(VISIT))
        if poll > 0:  # tabs were not all opened in the same instant
            time.sleep(rng.uniform(0, poll))
        while time.perf_counter() < stop_at:
            kind, path, hx = VISIT[step % len(VISIT)]
            step += 1
            began = time.perf_counter()
            try:
                reply = client.get(path, headers={"HX-Request": "true"} if hx else None)
                ok, problem = reply.status_code == 200, f"{path}: HTTP {reply.status_code}"
            except httpx.HTTPError as exc:
                ok, problem = False, f"{path}: {exc!r}"
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                if ok:
                    phase.samples[kind].append(elapsed)
                else:
                    phase.errors.append(problem)
            if poll > 0:
                time.sleep(rng.uniform(0.5, 1.5) * poll)

    started = time.perf_counter()
    threads = [threading.Thread(target=user, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - started
    return phase


def report(title: str, phase: Phase, users: int) -> int:
    every = sorted(v for values in phase.samples.values() for v in values)
    print(f"\n{title}: {users} users, {phase.wall:.1f} s")
    print(f"{'request':<16}{'n':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for kind in ("dashboard", "dashboard live", "positions", "positions live"):
        values = sorted(phase.samples.get(kind, []))
        if values:
            print(
                f"{kind:<16}{len(values):>7}{percentile(values, 50):>9.1f}{percentile(values, 95):>9.1f}"
                f"{percentile(values, 99):>9.1f}{statistics.fmean(values):>9.1f}"
            )
    if every:
        print(
            f"{'all':<16}{len(every):>7}{percentile(every, 50):>9.1f}{percentile(every, 95):>9.1f}"
            f"{percentile(every, 99):>9.1f}{statistics.fmean(every):>9.1f}"
        )
    print(f"throughput: {len(every) / phase.wall:.1f} requests/s; errors: {len(phase.errors)}")
    for problem in phase.errors[:5]:
        print("  error:", problem)
    return len(phase.errors)


if __name__ == "__main__":
    raise SystemExit(main())
