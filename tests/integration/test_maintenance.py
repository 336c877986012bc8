"""Retention, order archiving and backups, with a fixed ``now``; the CLI commands end to end on SQLite."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from algomirror.cli import main
from algomirror.db import maintenance
from algomirror.db.maintenance import (
    BackupError,
    archive_orders,
    archive_trades,
    backup_postgres,
    backup_sqlite,
    purge_activity_logs,
)
from algomirror.db.models import (
    ActivityLog,
    Order,
    OrderArchive,
    Trade,
    TradeArchive,
    TradingAccount,
    User,
)
from algomirror.db.models.feed import WebSocketSession
from algomirror.db.session import Database

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _account(session: Session) -> TradingAccount:
    user = User(username="alice", email="alice@example.com", password_hash="x" * 20)
    session.add(user)
    session.flush()
    account = TradingAccount(user_id=user.id, account_name="acct-1", broker="sandbox", is_primary=True)
    session.add(account)
    session.flush()
    return account


def _order(account: TradingAccount, order_id: str, placed_at: datetime) -> Order:
    return Order(
        account_id=account.id,
        order_id=order_id,
        symbol="NIFTY30DEC2526000CE",
        exchange="NFO",
        action="SELL",
        quantity=65,
        order_type="LIMIT",
        price=Decimal("112.05"),
        product="NRML",
        status="complete",
        filled_quantity=65,
        pending_quantity=0,
        average_price=Decimal("112.45"),
        strategy="am-12",
        placed_at=placed_at,
    )


def _trade(
    account: TradingAccount, order_id: str, traded_at: datetime | None, *, seen: datetime = NOW
) -> Trade:
    return Trade(
        account_id=account.id,
        order_id=order_id,
        trade_id=f"T-{order_id}",
        trade_key=f"T-{order_id}",
        symbol="NIFTY30DEC2526000CE",
        exchange="NFO",
        product="NRML",
        action="SELL",
        quantity=65,
        average_price=Decimal("112.4525"),
        trade_value=Decimal("7309.41"),
        traded_at=traded_at,
        strategy="am-12",
        created_at=seen,
        updated_at=seen,
    )


def test_purge_activity_logs_when_older_than_retention_deletes_only_those(session: Session) -> None:
    ages = [timedelta(days=200), timedelta(days=90, seconds=1), timedelta(days=90), timedelta(days=1)]
    session.add_all(ActivityLog(action=f"age-{i}", timestamp=NOW - age) for i, age in enumerate(ages))
    session.commit()

    deleted = purge_activity_logs(session, NOW, days=90)
    session.commit()

    assert deleted == 2
    assert sorted(session.scalars(select(ActivityLog.action))) == ["age-2", "age-3"]


def test_purge_activity_logs_when_now_naive_raises_value_error(session: Session) -> None:
    with pytest.raises(ValueError):
        purge_activity_logs(session, NOW.replace(tzinfo=None))


def test_archive_orders_when_older_than_window_moves_them_with_same_values(session: Session) -> None:
    account = _account(session)
    old = _order(account, "old-1", NOW - timedelta(days=45))
    session.add_all([old, _order(account, "edge", NOW - timedelta(days=30)), _order(account, "new", NOW)])
    session.commit()
    old_id = old.id

    counts = archive_orders(session, NOW, days=30)
    session.commit()
    session.expunge_all()

    assert (counts.archived, counts.deleted) == (1, 1)
    assert sorted(session.scalars(select(Order.order_id))) == ["edge", "new"]
    archived = session.scalars(select(OrderArchive)).one()
    assert archived.id == old_id
    assert (archived.order_id, archived.account_id, archived.status) == ("old-1", account.id, "complete")
    assert (archived.price, archived.average_price) == (Decimal("112.05"), Decimal("112.45"))
    assert (archived.filled_quantity, archived.pending_quantity, archived.strategy) == (65, 0, "am-12")
    assert archived.placed_at == NOW - timedelta(days=45)
    assert archived.archived_at == NOW


def test_archive_orders_when_more_than_one_batch_moves_all(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "ARCHIVE_BATCH", 2)
    account = _account(session)
    session.add_all(_order(account, f"o{i}", NOW - timedelta(days=31 + i)) for i in range(5))
    session.add(_order(account, "keep", NOW))
    session.commit()

    counts = archive_orders(session, NOW, days=30)
    session.commit()

    assert (counts.archived, counts.deleted) == (5, 5)
    assert session.scalar(select(func.count()).select_from(OrderArchive)) == 5
    assert list(session.scalars(select(Order.order_id))) == ["keep"]


def test_archive_orders_when_rolled_back_leaves_orders_in_place(session: Session) -> None:
    account = _account(session)
    session.add_all([_order(account, "old", NOW - timedelta(days=40)), _order(account, "new", NOW)])
    session.commit()

    assert archive_orders(session, NOW).archived == 1
    session.rollback()

    assert session.scalar(select(func.count()).select_from(OrderArchive)) == 0
    assert sorted(session.scalars(select(Order.order_id))) == ["new", "old"]


def test_archive_trades_when_older_than_window_moves_them_with_same_values(session: Session) -> None:
    account = _account(session)
    old = _trade(account, "old-1", NOW - timedelta(days=45), seen=NOW - timedelta(days=45))
    # Time-only stamps (traded_at NULL) are aged by when sync first saw them.
    stampless_old = _trade(account, "old-2", None, seen=NOW - timedelta(days=31))
    session.add_all(
        [
            old,
            stampless_old,
            _trade(account, "stampless-new", None, seen=NOW - timedelta(days=2)),
            _trade(account, "edge", NOW - timedelta(days=30)),
            _trade(account, "new", NOW),
        ]
    )
    session.commit()
    old_id = old.id

    counts = archive_trades(session, NOW, days=30)
    session.commit()
    session.expunge_all()

    assert (counts.archived, counts.deleted) == (2, 2)
    assert sorted(session.scalars(select(Trade.order_id))) == ["edge", "new", "stampless-new"]
    archived = {t.order_id: t for t in session.scalars(select(TradeArchive))}
    assert sorted(archived) == ["old-1", "old-2"]
    row = archived["old-1"]
    assert (row.id, row.account_id, row.trade_id, row.trade_key) == (old_id, account.id, "T-old-1", "T-old-1")
    assert (row.average_price, row.trade_value) == (Decimal("112.4525"), Decimal("7309.41"))
    assert (row.quantity, row.action, row.product, row.strategy) == (65, "SELL", "NRML", "am-12")
    assert (row.traded_at, row.created_at, row.archived_at) == (
        NOW - timedelta(days=45),
        NOW - timedelta(days=45),
        NOW,
    )
    assert archived["old-2"].traded_at is None


def test_archive_trades_when_more_than_one_batch_moves_all(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "ARCHIVE_BATCH", 2)
    account = _account(session)
    session.add_all(_trade(account, f"t{i}", NOW - timedelta(days=31 + i)) for i in range(5))
    session.add(_trade(account, "keep", NOW))
    session.commit()

    counts = archive_trades(session, NOW, days=30)
    session.commit()

    assert (counts.archived, counts.deleted) == (5, 5)
    assert session.scalar(select(func.count()).select_from(TradeArchive)) == 5
    assert list(session.scalars(select(Trade.order_id))) == ["keep"]


def test_archive_orders_and_trades_when_rolled_back_leave_both_in_place(session: Session) -> None:
    account = _account(session)
    session.add_all(
        [_order(account, "old", NOW - timedelta(days=40)), _trade(account, "old", NOW - timedelta(days=40))]
    )
    session.add_all([_order(account, "new", NOW), _trade(account, "new", NOW)])
    session.commit()

    assert archive_orders(session, NOW).archived == 1 and archive_trades(session, NOW).archived == 1
    session.rollback()

    assert session.scalar(select(func.count()).select_from(OrderArchive)) == 0
    assert session.scalar(select(func.count()).select_from(TradeArchive)) == 0
    assert sorted(session.scalars(select(Trade.order_id))) == ["new", "old"]
    assert sorted(session.scalars(select(Order.order_id))) == ["new", "old"]


def test_archive_trades_when_now_naive_or_window_empty_raises_value_error(session: Session) -> None:
    with pytest.raises(ValueError):
        archive_trades(session, NOW.replace(tzinfo=None))
    with pytest.raises(ValueError):
        archive_trades(session, NOW, days=0)


def test_backup_sqlite_when_database_has_rows_writes_consistent_copy(tmp_path: Path) -> None:
    source = tmp_path / "live.db"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("a",), ("b",)])
    conn.close()

    path = backup_sqlite(f"sqlite:///{source}", tmp_path / "backups", NOW)

    assert path == tmp_path / "backups" / "algomirror_20260302T120000Z.db"
    copy = sqlite3.connect(path)
    try:
        assert copy.execute("SELECT v FROM t ORDER BY v").fetchall() == [("a",), ("b",)]
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        copy.close()
    assert not list((tmp_path / "backups").glob("*.partial"))


def test_backup_sqlite_when_file_missing_raises_backup_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="not found"):
        backup_sqlite(f"sqlite:///{tmp_path / 'nope.db'}", tmp_path, NOW)
    with pytest.raises(BackupError, match="in-memory"):
        backup_sqlite("sqlite://", tmp_path, NOW)


def test_backup_postgres_when_pg_dump_available_writes_custom_dump(
    pg_database_url: str, tmp_path: Path
) -> None:
    path = backup_postgres(pg_database_url, tmp_path, NOW)

    assert path.name == "algomirror_20260302T120000Z.dump"
    assert path.read_bytes()[:5] == b"PGDMP"


def test_backup_postgres_when_pg_dump_missing_raises_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(BackupError, match="pg_dump not found"):
        backup_postgres("postgresql+psycopg://u:secret@127.0.0.1:5432/db", tmp_path / "b", NOW)


def test_backup_postgres_when_server_refuses_reports_first_line_without_password(tmp_path: Path) -> None:
    with pytest.raises(BackupError) as err:
        backup_postgres("postgresql+psycopg://nobody:s3cret-pw@127.0.0.1:1/none", tmp_path, NOW)
    assert "pg_dump failed" in str(err.value)
    assert "s3cret-pw" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_cli_when_maintenance_and_backup_run_on_sqlite_print_counts_and_path(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_file = tmp_path / "app.db"
    db_file.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{db_file}"
    database = Database(url)
    try:
        with database.session() as session:
            account = _account(session)
            session.add(_order(account, "ancient", datetime(2020, 1, 1, tzinfo=UTC)))
            session.add(_trade(account, "ancient", datetime(2020, 1, 1, tzinfo=UTC)))
            # The newest order and trade always stay (see archive_orders): these are them.
            session.add(_order(account, "recent", datetime.now(UTC)))
            session.add(_trade(account, "recent", datetime.now(UTC)))
            session.add(ActivityLog(action="ancient", timestamp=datetime(2020, 1, 1, tzinfo=UTC)))
    finally:
        database.dispose()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALGOMIRROR_DATABASE_URL", url)
    monkeypatch.setenv("ALGOMIRROR_INSTANCE_DIR", str(tmp_path / "instance"))
    runner = CliRunner()

    result = runner.invoke(main, ["maintenance", "run"])
    assert result.exit_code == 0, result.output
    assert "activity logs deleted: 1" in result.output
    assert "orders archived: 1, trades archived: 1" in result.output

    result = runner.invoke(main, ["backup", "--dest", str(tmp_path / "bk")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "bk").glob("algomirror_*.db"))) == 1


def test_purge_user_sessions_when_expired_or_idle_deletes_only_those(session: Session) -> None:
    from algomirror.db.maintenance import purge_user_sessions
    from algomirror.db.models import User, UserSession

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    user = User(username="priya", email="p@example.com", password_hash="x")
    session.add(user)
    session.flush()

    def row(name: str, *, remember: bool, seen_hours_ago: int, expires_in_hours: int) -> UserSession:
        return UserSession(
            user_id=user.id,
            key_hash=name.ljust(64, "0"),
            remember=remember,
            created_at=now - timedelta(days=1),
            last_seen_at=now - timedelta(hours=seen_hours_ago),
            expires_at=now + timedelta(hours=expires_in_hours),
        )

    session.add_all(
        [
            row("a", remember=False, seen_hours_ago=1, expires_in_hours=24),  # live
            row("b", remember=False, seen_hours_ago=13, expires_in_hours=24),  # idle past 12 h
            row("c", remember=True, seen_hours_ago=13, expires_in_hours=24),  # remembered: idle is fine
            row("d", remember=True, seen_hours_ago=1, expires_in_hours=-1),  # past its absolute expiry
        ]
    )
    session.flush()

    assert purge_user_sessions(session, now, idle_hours=12) == 2
    assert sorted(r.key_hash[0] for r in session.scalars(select(UserSession))) == ["a", "c"]


# --- the whole run: dry run versus run, expired websocket sessions, the database upkeep ------------------


def _ws_session(
    user_id: int, name: str, *, expires: datetime | None, created: datetime = NOW
) -> WebSocketSession:

    return WebSocketSession(
        session_id=name, user_id=user_id, session_type="option_chain", created_at=created, expires_at=expires
    )


def _seed_everything(database: Database) -> None:
    """2 old activity logs (+1 new), 3 old orders (+1 new), 2 old trades (+1 new), 1 dead sign-in session
    (+1 live), 2 expired websocket sessions (+1 live)."""
    from algomirror.db.models import UserSession

    with database.session() as session:
        account = _account(session)
        user = User(username="ravi", email="r@example.com", password_hash="x")
        session.add(user)
        session.flush()
        session.add_all(
            ActivityLog(action=f"a{i}", timestamp=NOW - timedelta(days=d)) for i, d in enumerate((120, 91, 3))
        )
        session.add_all(_order(account, f"o{d}", NOW - timedelta(days=d)) for d in (60, 45, 31))
        session.add(_order(account, "o-new", NOW))
        session.add_all(_trade(account, f"t{d}", NOW - timedelta(days=d)) for d in (60, 31))
        session.add(_trade(account, "t-new", NOW))
        for key, expires in (("dead", NOW - timedelta(hours=1)), ("live", NOW + timedelta(hours=5))):
            session.add(
                UserSession(
                    user_id=user.id,
                    key_hash=key.ljust(64, "0"),
                    remember=True,
                    created_at=NOW - timedelta(days=1),
                    last_seen_at=NOW,
                    expires_at=expires,
                )
            )
        session.add_all(
            [
                _ws_session(user.id, "ws-expired", expires=NOW - timedelta(minutes=1)),
                _ws_session(user.id, "ws-never", expires=None, created=NOW - timedelta(days=2)),
                _ws_session(user.id, "ws-live", expires=NOW + timedelta(minutes=4)),
            ]
        )


def _counts(database: Database) -> tuple[int, ...]:
    from algomirror.db.models import UserSession

    with database.session_factory() as session:
        return tuple(
            int(session.scalar(select(func.count()).select_from(m)) or 0)
            for m in (ActivityLog, Order, OrderArchive, Trade, TradeArchive, UserSession, WebSocketSession)
        )


def test_run_maintenance_when_dry_run_counts_without_change_then_run_does_the_same_counts(
    database: Database,
) -> None:
    _seed_everything(database)
    policy = maintenance.MaintenancePolicy(activity_days=90, archive_days=30, session_idle_hours=12)
    before = _counts(database)

    dry = maintenance.run_maintenance(database, NOW, policy, dry_run=True)

    expected = (2, 3, 2, 1, 2)
    got = (dry.activity_logs, dry.orders, dry.trades, dry.user_sessions, dry.websocket_sessions)
    assert got == expected
    assert _counts(database) == before
    assert not dry.analyzed and not dry.vacuumed
    assert "would be deleted: 2" in "\n".join(dry.lines(policy))

    done = maintenance.run_maintenance(database, NOW, policy)

    got = (done.activity_logs, done.orders, done.trades, done.user_sessions, done.websocket_sessions)
    assert got == expected
    assert _counts(database) == (1, 1, 3, 1, 2, 1, 1)
    assert done.analyzed
    again = maintenance.run_maintenance(database, NOW, policy)
    assert (again.activity_logs, again.orders, again.trades, again.user_sessions) == (0, 0, 0, 0)
    assert again.websocket_sessions == 0
    assert _counts(database) == (1, 1, 3, 1, 2, 1, 1)


def test_archive_when_every_order_is_old_keeps_the_newest_so_ids_are_never_reused(database: Database) -> None:
    with database.session() as session:
        account = _account(session)
        session.add_all(_order(account, f"o{i}", NOW - timedelta(days=40 + i)) for i in range(3))
    with database.session() as session:
        assert archive_orders(session, NOW).archived == 2
    # A new order after the archive: its id must not collide with an archived one on the next move.
    with database.session() as session:
        account_id = session.scalar(select(TradingAccount.id))
        assert account_id is not None
        session.add(_order(session.get(TradingAccount, account_id), "next", NOW))  # type: ignore[arg-type]
    later = NOW + timedelta(days=60)
    with database.session() as session:
        assert archive_orders(session, later).archived == 1
    with database.session_factory() as session:
        assert list(session.scalars(select(Order.order_id))) == ["next"]
        assert session.scalar(select(func.count()).select_from(OrderArchive)) == 3


def test_run_maintenance_on_sqlite_vacuums_only_when_worthwhile(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "VACUUM_MIN_FREE_PAGES", 50)
    path = tmp_path / "v.db"
    path.write_bytes(sqlite_template.read_bytes())
    database = Database(f"sqlite:///{path}")
    policy = maintenance.MaintenancePolicy()

    def old_logs(n: int) -> None:
        with database.session() as session:
            session.add_all(
                ActivityLog(action="old", details="x" * 400, timestamp=NOW - timedelta(days=200))
                for _ in range(n)
            )

    try:
        old_logs(20)  # a few pages freed: not worth rewriting the file
        report = maintenance.run_maintenance(database, NOW, policy)
        assert report.activity_logs == 20 and report.analyzed
        assert not report.vacuumed, report.vacuum_note

        old_logs(2000)  # most of the file freed
        report = maintenance.run_maintenance(database, NOW, policy)
        assert report.activity_logs == 2000
        assert report.vacuumed, report.vacuum_note
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA freelist_count").fetchone() == (0,)
        finally:
            conn.close()
    finally:
        database.dispose()


def test_cli_maintenance_when_dry_run_prints_counts_and_changes_nothing(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_file = tmp_path / "app.db"
    db_file.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{db_file}"
    database = Database(url)
    try:
        _seed_everything(database)  # dated around NOW (March 2026): everything old is older still today
        before = _counts(database)
        monkeypatch.setenv("ALGOMIRROR_DATABASE_URL", url)
        monkeypatch.setenv("ALGOMIRROR_INSTANCE_DIR", str(tmp_path / "instance"))

        result = CliRunner().invoke(main, ["maintenance", "run", "--dry-run"])

        assert result.exit_code == 0, result.output
        assert "orders would be archived: 3, trades would be archived: 2" in result.output
        assert "not run: dry run" in result.output
        assert _counts(database) == before
    finally:
        database.dispose()
