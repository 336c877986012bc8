"""Issue 8 item 8: a sync cycle's database work does not grow with the account's history.

Two accounts on the paper exchange trade the same today; one has 30,000 orders and 30,000 trades of
earlier days, the other 300 of each. The work of one cycle is measured by what the database did — SQL
statements sent and ORM rows loaded from ``orders``/``trades`` (SQLAlchemy event listeners) — not by
timing; bench/sync_books.py prints the timings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import Session

from algomirror.broker.registry import ClientRegistry
from algomirror.broker.wire import Action, OrderRequest, PriceType, Product
from algomirror.db.models import Order, Trade, TradingAccount, User
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.book_mirror import trading_day_start
from algomirror.engine.sync import AccountSync, SyncConfig
from algomirror.security import SecretBox
from tests.sim_fixtures import SIM_START, SimHandle

BOX = SecretBox(Fernet.generate_key())
CE = "NIFTY01DEC2626000CE"
PE = "NIFTY01DEC2626000PE"


@dataclass
class Work:
    """What the database did while it was being watched."""

    statements: int = 0
    loaded: dict[str, int] = field(default_factory=lambda: {"orders": 0, "trades": 0})


class WorkMeter:
    """Counts SQL statements on ``database`` and ORM rows loaded from orders and trades."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.work: Work | None = None

    def _statement(self, *_args: Any) -> None:
        if self.work is not None:
            self.work.statements += 1

    def _loaded(self, table: str) -> Any:
        def on_load(*_args: Any) -> None:
            if self.work is not None:
                self.work.loaded[table] += 1

        return on_load

    def __enter__(self) -> WorkMeter:
        self._on_order = self._loaded("orders")
        self._on_trade = self._loaded("trades")
        event.listen(self.database.engine, "before_cursor_execute", self._statement)
        event.listen(Order, "load", self._on_order)
        event.listen(Trade, "load", self._on_trade)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.database.engine, "before_cursor_execute", self._statement)
        event.remove(Order, "load", self._on_order)
        event.remove(Trade, "load", self._on_trade)

    @contextmanager
    def measure(self) -> Iterator[Work]:
        self.work = Work()
        try:
            yield self.work
        finally:
            self.work = None


def seed_history(session: Session, account_id: int, count: int, *, before: datetime) -> None:
    """``count`` completed orders and one fill each, spread over the 60 days before ``before``; every
    tenth fill has a time-only stamp (``traded_at`` NULL), as some live tradebooks give."""
    orders: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    for i in range(count):
        at = before - timedelta(minutes=1 + i * 60 * 24 * 60 // max(count, 1))
        order_id = f"H{account_id}-{i:06d}"
        orders.append(
            {
                "account_id": account_id, "order_id": order_id, "symbol": CE, "exchange": "NFO",
                "action": "SELL" if i % 2 else "BUY", "quantity": 65, "order_type": "MARKET",
                "product": "NRML", "status": "complete", "filled_quantity": 65, "pending_quantity": 0,
                "average_price": Decimal("101.25"), "strategy": "history", "placed_at": at,
                "executed_at": at, "created_at": at, "updated_at": at,
            }
        )  # fmt: skip
        trades.append(
            {
                "account_id": account_id, "order_id": order_id, "trade_id": None, "trade_key": "#1",
                "symbol": CE, "exchange": "NFO", "product": "NRML", "action": "SELL" if i % 2 else "BUY",
                "quantity": 65, "average_price": Decimal("101.25"), "trade_value": Decimal("6581.25"),
                "traded_at": None if i % 10 == 0 else at, "strategy": "history", "created_at": at,
                "updated_at": at,
            }
        )  # fmt: skip
    for start in range(0, count, 5000):
        session.execute(insert(Order), orders[start : start + 5000])
        session.execute(insert(Trade), trades[start : start + 5000])


def fast_config() -> SyncConfig:
    return SyncConfig(interval_market=0.1, interval_closed=0.1, refresh_seconds=0.05, down_interval=0.1)


@pytest.fixture
async def sync(database: Database) -> AsyncIterator[AccountSync]:
    engine_sync = AccountSync(database, BOX.decrypt, config=fast_config(), clock=FakeClock(SIM_START))
    try:
        yield engine_sync
    finally:
        await engine_sync.aclose()


def rows(database: Database, model: type[Order] | type[Trade], account_id: int, **where: Any) -> int:
    with database.session() as s:
        query = select(func.count()).select_from(model).where(model.account_id == account_id)
        for name, value in where.items():
            query = query.where(getattr(model, name) >= value)
        return int(s.scalar(query) or 0)


async def test_sync_when_account_has_30000_old_trades_costs_what_one_with_300_costs(
    database: Database, simulator_session: SimHandle, sync: AccountSync
) -> None:
    sim = simulator_session
    with database.session() as s:
        user = User(username="history", email="history@example.com", password_hash="x")
        s.add(user)
        s.flush()
        ids: list[int] = []
        for i, name in enumerate(("Long history", "Short history")):
            acc = TradingAccount(
                user_id=user.id,
                account_name=name,
                broker="sandbox",
                host_url=sim.rest_url,
                api_key_encrypted=BOX.encrypt(sim.api_keys[i]),
                api_key_last4=sim.api_keys[i][-4:],
                # Neither is primary: a primary also reads the header's index quotes, a fixed cost that
                # has nothing to do with its history.
                is_primary=False,
            )
            s.add(acc)
            s.flush()
            ids.append(acc.id)
    big, small = ids
    day_start = trading_day_start(SIM_START)
    with database.session() as s:
        seed_history(s, big, 30_000, before=day_start)
        seed_history(s, small, 300, before=day_start)
    # The same day's trading on both: two fills and one resting order each.
    async with ClientRegistry() as registry:
        for index in (0, 1):
            client = registry.client(index, sim.rest_url, sim.api_keys[index])
            for symbol, action, kind in (
                (CE, Action.BUY, PriceType.MARKET),
                (PE, Action.SELL, PriceType.MARKET),
                (PE, Action.BUY, PriceType.LIMIT),
            ):
                request = OrderRequest(
                    symbol=symbol,
                    exchange="NFO",
                    action=action,
                    quantity=65,
                    product=Product.NRML,
                    pricetype=kind,
                    price=Decimal("1.00") if kind is PriceType.LIMIT else Decimal(0),
                )
                await client.place_order(request, strategy="cost-test")
    # The first cycle inserts today's rows; the second is the steady state that runs every 5 s.
    for acc in (big, small):
        assert (await sync.sync_account_once(acc)).success

    with WorkMeter(database) as meter:
        measured: dict[int, Work] = {}
        for acc in (big, small):
            with meter.measure() as work:
                result = await sync.sync_account_once(acc)
                assert result.success, result.errors
                measured[acc] = work

    today_orders = rows(database, Order, big, placed_at=day_start)
    today_trades = rows(database, Trade, big, traded_at=day_start)
    assert (today_orders, today_trades) == (3, 2)
    # Rows loaded are today's (and nothing of the history), and the same for both accounts.
    assert measured[big].loaded == measured[small].loaded
    assert measured[big].loaded["orders"] <= today_orders and measured[big].loaded["trades"] <= today_trades
    assert measured[big].statements == measured[small].statements
    # The history is still there, untouched.
    assert rows(database, Order, big) == 30_003 and rows(database, Trade, big) == 30_002
    with database.session() as s:
        newest_old = s.scalar(
            select(func.max(Trade.updated_at)).where(Trade.account_id == big, Trade.strategy == "history")
        )
    assert newest_old is not None and newest_old < day_start
