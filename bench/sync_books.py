"""Account-sync benchmark: one sync cycle of an account with a long history against one with a short one.

Two accounts point at the same paper-exchange key (run as its own process, so it does not share this
interpreter's GIL), so their books of the day are identical: three orders, two fills. Before the run one
account gets ``--history`` completed orders and fills of earlier days (default 30,000), the other
``--short`` (default 300), bulk-inserted. Each account is then synced ``--cycles`` times (after one
warm-up cycle that stores today's rows) with :meth:`AccountSync.sync_account_once`.

Prints, per account, the cycle time (median, p90), the SQL statements of one cycle and the ORM rows it
loaded from ``orders``/``trades``; the last line is ``sync cycle ratio long/short X.XX`` (target ≈ 1:
the cost does not grow with the history; before issue 8 it was 6 ms at a few hundred trades and 605 ms
at 30,000). SQLite in a temp dir, or a private PostgreSQL database when ``ALGOMIRROR_BENCH_PG`` is set
(see bench/dashboard.py). Never fails on timing.
Usage: ``python bench/sync_books.py [--history 30000] [--short 300] [--cycles 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from client_pool import simulator_process
from cryptography.fernet import Fernet
from dashboard import database_url
from sqlalchemy import event, insert

from algomirror.broker.client import RetryPolicy
from algomirror.broker.ratelimit import RateLimits
from algomirror.broker.registry import ClientRegistry
from algomirror.broker.wire import Action, OrderRequest, PriceType, Product
from algomirror.db.models import Order, Trade, TradingAccount, User
from algomirror.db.session import Database
from algomirror.domain.timeutil import utcnow
from algomirror.engine.book_mirror import trading_day_start
from algomirror.engine.sync import AccountSync, SyncConfig
from algomirror.security import SecretBox

CE, PE = "NIFTY01DEC2626000CE", "NIFTY01DEC2626000PE"


@dataclass
class Figures:
    seconds: list[float] = field(default_factory=list)
    statements: int = 0
    loaded: dict[str, int] = field(default_factory=lambda: {"orders": 0, "trades": 0})


def seed(database: Database, account_id: int, count: int, before: datetime) -> None:
    """``count`` completed orders with one fill each over the 60 days before ``before`` (every tenth
    fill with a time-only stamp, ``traded_at`` NULL)."""
    step = timedelta(minutes=60 * 24 * 60 / max(count, 1))
    orders: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    for i in range(count):
        at = before - timedelta(minutes=1) - step * i
        common = {"account_id": account_id, "order_id": f"H{account_id}-{i:06d}", "symbol": CE,
                  "exchange": "NFO", "action": "BUY", "quantity": 65, "product": "NRML",
                  "average_price": Decimal("101.25"), "strategy": "history", "created_at": at,
                  "updated_at": at}  # fmt: skip
        orders.append({**common, "order_type": "MARKET", "status": "complete", "filled_quantity": 65,
                       "pending_quantity": 0, "placed_at": at, "executed_at": at})  # fmt: skip
        trades.append({**common, "trade_id": None, "trade_key": "#1", "trade_value": Decimal("6581.25"),
                       "traded_at": None if i % 10 == 0 else at})  # fmt: skip
    with database.session() as s:
        for start in range(0, count, 5000):
            s.execute(insert(Order), orders[start : start + 5000])
            s.execute(insert(Trade), trades[start : start + 5000])


async def place_todays_orders(url: str, key: str) -> None:
    async with ClientRegistry() as registry:
        client = registry.client(0, url, key)
        for symbol, action, kind in ((CE, Action.BUY, PriceType.MARKET), (PE, Action.SELL, PriceType.MARKET),
                                     (PE, Action.BUY, PriceType.LIMIT)):  # fmt: skip
            price = Decimal("1.00") if kind is PriceType.LIMIT else Decimal(0)
            request = OrderRequest(symbol=symbol, exchange="NFO", action=action, quantity=65,
                                   product=Product.NRML, pricetype=kind, price=price)  # fmt: skip
            await client.place_order(request, strategy="bench")


async def measure(
    database: Database, sync: AccountSync, accounts: dict[int, int], cycles: int
) -> dict[int, Figures]:
    """``cycles`` timed cycles per account (``accounts``: size -> account id), interleaved so that
    background work of the database (autovacuum, checkpoints after the bulk load) hits both alike."""
    figures = {size: Figures() for size in accounts}
    counting: Figures | None = None

    def on_statement(*_args: Any) -> None:
        if counting is not None:
            counting.statements += 1

    def on_load(table: str) -> Any:
        def count(*_args: Any) -> None:
            if counting is not None:
                counting.loaded[table] += 1

        return count

    on_order, on_trade = on_load("orders"), on_load("trades")
    event.listen(database.engine, "before_cursor_execute", on_statement)
    event.listen(Order, "load", on_order)
    event.listen(Trade, "load", on_trade)
    try:
        for account_id in accounts.values():
            await sync.sync_account_once(account_id)  # warm-up: stores today's rows
        for cycle in range(cycles):
            for size, account_id in accounts.items():
                # Statements and rows of one steady-state cycle.
                counting = figures[size] if cycle == 0 else None
                began = time.perf_counter()
                result = await sync.sync_account_once(account_id)
                figures[size].seconds.append(time.perf_counter() - began)
                counting = None
                if not result.success:
                    raise RuntimeError(f"sync failed: {result.errors}")
    finally:
        event.remove(database.engine, "before_cursor_execute", on_statement)
        event.remove(Order, "load", on_order)
        event.remove(Trade, "load", on_trade)
    return figures


async def run(url: str, sim_url: str, key: str, sizes: tuple[int, int], cycles: int) -> dict[int, Figures]:
    box = SecretBox(Fernet.generate_key())
    database = Database(url)
    try:
        with database.session() as s:
            user = User(username="bench", email="bench@example.com", password_hash="x")
            s.add(user)
            s.flush()
            accounts = []
            for size in sizes:
                acc = TradingAccount(user_id=user.id, account_name=f"history {size}", broker="sandbox",
                                     host_url=sim_url, api_key_encrypted=box.encrypt(key),
                                     api_key_last4=key[-4:], is_primary=not accounts)  # fmt: skip
                s.add(acc)
                s.flush()
                accounts.append(acc.id)
        day_start = trading_day_start(utcnow())
        for acc_id, size in zip(accounts, sizes, strict=True):
            began = time.perf_counter()
            seed(database, acc_id, size, day_start)
            print(
                f"seeded {size:,} orders + {size:,} trades in {time.perf_counter() - began:.1f} s", flush=True
            )
        await place_todays_orders(sim_url, key)
        # Unpaced: back-to-back cycles would otherwise wait for the account's rate budget (50 calls/s),
        # which the real 5 s interval never meets; the bench is about the database side.
        registry = ClientRegistry(limits=RateLimits.unlimited(), retry=RetryPolicy(attempts=1))
        sync = AccountSync(database, box.decrypt, config=SyncConfig(), registry=registry)
        try:
            return await measure(database, sync, dict(zip(sizes, accounts, strict=True)), cycles)
        finally:
            await registry.aclose()
    finally:
        database.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=30_000, help="old orders/trades of the long account")
    parser.add_argument("--short", type=int, default=300, help="old orders/trades of the short account")
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    sizes = (args.history, args.short)
    with (
        tempfile.TemporaryDirectory() as tmp,
        database_url(Path(tmp)) as url,
        simulator_process() as (sim_url, key, _token),
    ):
        print(f"database: {url.split('://')[0]}; {args.cycles} cycles per account", flush=True)
        results = asyncio.run(run(url, sim_url, key, sizes, args.cycles))
    for size in sizes:
        fig = results[size]
        ms = sorted(s * 1000 for s in fig.seconds)
        p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
        print(
            f"history {size:>6,}: cycle median {statistics.median(ms):6.1f} ms, p90 {p90:6.1f} ms; "
            f"{fig.statements} statements, rows loaded: orders {fig.loaded['orders']}, "
            f"trades {fig.loaded['trades']}"
        )
    ratio = statistics.median(results[sizes[0]].seconds) / statistics.median(results[sizes[1]].seconds)
    print(f"sync cycle ratio long/short {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
