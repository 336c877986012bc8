"""Money is exact on both databases: 4-decimal prices round-trip, SQLite stores integer units (never a
binary float) and sums them exactly in SQL, and a database migrated from revision 0001 is converted.
SQLite write transactions are isolated: two concurrent read-modify-write loops lose no update."""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from algomirror.db.migrate import upgrade_url
from algomirror.db.models import Trade, TradeQuality, TradingAccount
from algomirror.db.session import Database
from tests.factories import make_account, make_trade, make_user


def test_price_when_four_decimals_written_reads_back_exactly(db_url: str) -> None:
    database = Database(db_url)
    try:
        with database.session() as session:
            account = make_account(session, make_user(session, "priya").id, "main")
            make_trade(
                session, account.id, "1", average_price=Decimal("123.4567"), trade_value=Decimal("0.1")
            )
        with database.session() as session:
            trade = session.scalars(select(Trade)).one()
            assert (trade.average_price, trade.trade_value) == (Decimal("123.4567"), Decimal("0.10"))
    finally:
        database.dispose()


def test_money_when_stored_on_sqlite_is_integer_units_summed_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_url(url, "head")
    database = Database(url)
    try:
        with database.session() as session:
            account = make_account(session, make_user(session, "priya").id, "main")
            # 0.1 + 0.2 + 0.3 is the classic float trap (0.6000000000000001).
            for n, value in enumerate(("0.10", "0.20", "0.30"), start=1):
                make_trade(
                    session, account.id, str(n), trade_value=Decimal(value), average_price=Decimal("7.0001")
                )
        with database.session() as session:
            assert session.scalar(
                select(func.sum(Trade.trade_value, type_=Trade.trade_value.type))
            ) == Decimal("0.60")
    finally:
        database.dispose()
    raw = sqlite3.connect(tmp_path / "m.db")
    try:
        rows = raw.execute(
            "SELECT typeof(trade_value), trade_value, typeof(average_price), average_price FROM trades"
        )
        assert set(rows.fetchall()) >= {("integer", 1000, "integer", 70001)}
        assert raw.execute("SELECT SUM(trade_value), typeof(SUM(trade_value)) FROM trades").fetchone() == (
            6000,
            "integer",
        )
    finally:
        raw.close()


def test_upgrade_when_0001_database_holds_money_converts_it_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_url(url, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (username, email, password_hash, is_admin, is_active, session_version,"
                " created_at, updated_at) VALUES ('priya', 'p@example.com', 'x', 0, 1, 1,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO trading_accounts (user_id, account_name, broker, allocation_multiplier,"
                " created_at, updated_at)"
                " VALUES (1, 'main', 'paper', 1.25, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO trade_qualities"
                " (user_id, quality_grade, margin_percentage, created_at, updated_at)"
                " VALUES (1, 'A', 95.5, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()

    upgrade_url(url, "head")

    database = Database(url)
    try:
        with database.session() as session:
            assert session.scalars(select(TradingAccount.allocation_multiplier)).one() == Decimal("1.25")
            assert session.scalars(select(TradeQuality.margin_percentage)).one() == Decimal("95.50")
            # The new server default is in storage units too.
            session.execute(
                text(
                    "INSERT INTO trading_accounts (user_id, account_name, broker, created_at, updated_at)"
                    " VALUES (1, 'second', 'paper', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            second = session.scalars(
                select(TradingAccount.allocation_multiplier).where(TradingAccount.account_name == "second")
            ).one()
            assert second == Decimal("1.00")
    finally:
        database.dispose()


def test_sqlite_write_sessions_when_two_threads_read_modify_write_lose_no_update(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade_url(url, "head")
    database = Database(url)
    rounds = 60
    try:
        with database.session() as session:
            account_id = make_account(session, make_user(session, "priya").id, "main").id
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def bump() -> None:
            try:
                barrier.wait()
                for _ in range(rounds):
                    with database.session() as session:
                        account = session.get(TradingAccount, account_id)
                        assert account is not None
                        # Read, compute in Python, write back: lost without transaction isolation.
                        account.consecutive_failures = account.consecutive_failures + 1
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        workers = [threading.Thread(target=bump) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)

        assert errors == []
        with database.session() as session:
            assert session.get(TradingAccount, account_id).consecutive_failures == 2 * rounds  # type: ignore[union-attr]
    finally:
        database.dispose()


def test_money_expression_when_scaled_by_a_number_in_sql_stays_in_rupees(db_url: str) -> None:
    database = Database(db_url)
    try:
        with database.session() as session:
            account = make_account(session, make_user(session, "priya").id, "main")
            make_trade(session, account.id, "1", trade_value=Decimal("10.50"), average_price=Decimal("3.25"))
        with database.session() as session:
            row = session.execute(
                select(
                    Trade.trade_value * 2,
                    Trade.trade_value / 2,
                    Trade.trade_value + Decimal("1.25"),
                    Trade.average_price * Trade.quantity,
                ).where(Trade.trade_value > Decimal("10"))
            ).one()
        assert (row[0], row[1], row[2]) == (Decimal("21.00"), Decimal("5.25"), Decimal("11.75"))
        assert row[3] == Decimal("243.75")  # 3.25 × 75 units: a column factor keeps money semantics too
    finally:
        database.dispose()
