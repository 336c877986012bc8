"""Housekeeping: activity-log retention, order and trade archiving, expired sessions, and the database's
own upkeep (ANALYZE / VACUUM) (PRODUCT §8 jobs, seed §Maintenance). Backups are in
:mod:`algomirror.db.backup`.

The single steps run inside the caller's session and transaction (they flush nothing else and never
commit); :func:`run_maintenance` runs them all, as ``algomirror maintenance run`` and the engine's daily
job (:mod:`algomirror.engine.maintenance_job`) do. Every step is idempotent: a second run finds nothing.
It is safe while the app runs: transactions are short except the archive move (orders and trades together,
all or nothing), rows are chosen by explicit ids, and VACUUM runs only when worthwhile and outside any
transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, insert, literal, or_, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, class_mapper

from algomirror.db.backup import BackupError, backup, backup_file_name, backup_postgres, backup_sqlite
from algomirror.db.models.books import Order, OrderArchive, Trade, TradeArchive
from algomirror.db.models.feed import WebSocketSession
from algomirror.db.models.users import ActivityLog, UserSession
from algomirror.db.session import Database
from algomirror.domain.timeutil import ensure_aware

log = logging.getLogger(__name__)

# Rows are moved in batches so one statement never carries an unbounded id list.
ARCHIVE_BATCH = 500
# SQLite VACUUM rewrites the whole file and blocks writers meanwhile: only when at least this share of the
# file, and this many pages, are free.
VACUUM_FREE_RATIO = 0.2
VACUUM_MIN_FREE_PAGES = 1000
# A websocket session without an expiry (never heartbeated) is dropped this long after it was created.
WS_SESSION_STALE = timedelta(days=1)


@dataclass(frozen=True)
class ArchiveCounts:
    archived: int
    deleted: int


# --- what each step selects (shared by the step and its dry-run count) ----------------------------------


def _old_activity(now: datetime, days: int) -> ColumnElement[bool]:
    return ActivityLog.timestamp < _cutoff(now, days)


def _dead_user_sessions(now: datetime, idle_hours: int) -> ColumnElement[bool]:
    now = ensure_aware(now)
    idle_cutoff = now - timedelta(hours=idle_hours)
    return (UserSession.expires_at <= now) | (
        UserSession.remember.is_(False) & (UserSession.last_seen_at < idle_cutoff)
    )


def _expired_ws_sessions(now: datetime) -> ColumnElement[bool]:
    now = ensure_aware(now)
    return or_(
        WebSocketSession.expires_at <= now,
        and_(WebSocketSession.expires_at.is_(None), WebSocketSession.created_at < now - WS_SESSION_STALE),
    )


def _old_orders(now: datetime, days: int) -> ColumnElement[bool]:
    return Order.placed_at < _cutoff(now, days)


def _old_trades(now: datetime, days: int) -> ColumnElement[bool]:
    cutoff = _cutoff(now, days)
    # A trade whose broker gave only a time of day (traded_at NULL) is aged by when sync first saw it.
    return or_(Trade.traded_at < cutoff, and_(Trade.traded_at.is_(None), Trade.created_at < cutoff))


def _count(session: Session, model: type[object], where: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(where)) or 0)


# --- the steps ------------------------------------------------------------------------------------------


def purge_activity_logs(session: Session, now: datetime, days: int = 90) -> int:
    """Delete activity-log rows older than ``days`` days before ``now`` (aware). Returns the count.

    Raises ValueError for a naive ``now`` or ``days`` < 1.
    """
    return _delete(session, ActivityLog, _old_activity(now, days))


def purge_user_sessions(session: Session, now: datetime, *, idle_hours: int) -> int:
    """Delete sign-in sessions that can no longer be used: past their absolute expiry, or (without
    Remember me) idle longer than ``idle_hours``. Returns the count. Raises ValueError for a naive
    ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be aware")
    return _delete(session, UserSession, _dead_user_sessions(now, idle_hours))


def purge_websocket_sessions(session: Session, now: datetime) -> int:
    """Delete option-chain viewing sessions (``websocket_sessions``) past their expiry, and ones that never
    got an expiry created more than a day ago. Returns the count. Raises ValueError for a naive ``now``."""
    return _delete(session, WebSocketSession, _expired_ws_sessions(now))


def archive_orders(session: Session, now: datetime, days: int = 30) -> ArchiveCounts:
    """Move orders placed more than ``days`` days before ``now`` to ``orders_archive`` (same ids, plus
    ``archived_at = now``). Copy and delete are by explicit id, so a row inserted meanwhile is never deleted
    without being archived. Runs in the caller's transaction: commit once for all-or-nothing.

    The newest order (highest id) always stays: SQLite gives a new row the highest id + 1, so an emptied
    table would hand out ids already in the archive, and every later move would fail on them.

    Raises ValueError for a naive ``now`` or ``days`` < 1.
    """
    return _move(session, Order, OrderArchive, _old_orders(now, days), ensure_aware(now))


def archive_trades(session: Session, now: datetime, days: int = 30) -> ArchiveCounts:
    """Move trades older than ``days`` days before ``now`` to ``trades_archive`` (same ids, plus
    ``archived_at = now``), like :func:`archive_orders` (the newest trade stays too). A trade's age is its
    ``traded_at``; one whose broker gave only a time of day (``traded_at`` NULL) is aged by ``created_at``,
    when sync first saw it. Runs in the caller's transaction: commit once for all-or-nothing.

    Raises ValueError for a naive ``now`` or ``days`` < 1.
    """
    return _move(session, Trade, TradeArchive, _old_trades(now, days), ensure_aware(now))


def _delete(session: Session, model: type[object], where: ColumnElement[bool]) -> int:
    result = session.execute(delete(model).where(where).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _movable(model: type[Order] | type[Trade], old: ColumnElement[bool]) -> ColumnElement[bool]:
    """``old`` except the table's newest row (see :func:`archive_orders` on SQLite's id reuse)."""
    newest = select(func.max(model.id)).scalar_subquery()
    return and_(old, model.id < newest)


def _move(
    session: Session,
    model: type[Order] | type[Trade],
    archive: type[OrderArchive] | type[TradeArchive],
    old: ColumnElement[bool],
    stamp: datetime,
) -> ArchiveCounts:
    """Copy the rows of ``model`` matching ``old`` into ``archive`` (same columns + ``archived_at``) and
    delete them, batch by batch of explicit ids."""
    columns = [c.key for c in class_mapper(model).columns]
    movable = _movable(model, old)
    archived = deleted = 0
    last_id = 0
    while True:
        ids = list(
            session.scalars(
                select(model.id).where(movable, model.id > last_id).order_by(model.id).limit(ARCHIVE_BATCH)
            )
        )
        if not ids:
            break
        last_id = ids[-1]
        source = select(
            *(getattr(model, name) for name in columns),
            literal(stamp, class_mapper(archive).columns["archived_at"].type),
        ).where(model.id.in_(ids))
        # preserve_rowcount: SQLAlchemy does not keep an INSERT's row count otherwise (psycopg gives -1).
        copied = session.execute(
            insert(archive)
            .from_select([*columns, "archived_at"], source)
            .execution_options(preserve_rowcount=True),
        )
        removed = session.execute(
            delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
        )
        archived += int(copied.rowcount or 0)  # type: ignore[attr-defined]
        deleted += int(removed.rowcount or 0)  # type: ignore[attr-defined]
    return ArchiveCounts(archived=archived, deleted=deleted)


# --- the whole run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaintenancePolicy:
    """Retention windows: activity logs (days), orders and trades (days), idle sign-in sessions (hours)."""

    activity_days: int = 90
    archive_days: int = 30
    session_idle_hours: int = 12


@dataclass
class MaintenanceReport:
    """What a run did (or, with ``dry_run``, would do): rows per step, and the database upkeep."""

    dry_run: bool
    activity_logs: int = 0
    orders: int = 0
    trades: int = 0
    user_sessions: int = 0
    websocket_sessions: int = 0
    analyzed: bool = False
    vacuumed: bool = False
    vacuum_note: str = ""
    seconds: float = 0.0
    touched: list[str] = field(default_factory=list)

    def lines(self, policy: MaintenancePolicy) -> list[str]:
        """The report as lines for the console and the log."""

        def done(past: str) -> str:
            return f"would be {past}" if self.dry_run else past

        out = [
            f"activity logs {done('deleted')}: {self.activity_logs} (older than {policy.activity_days} days)",
            f"orders {done('archived')}: {self.orders}, trades {done('archived')}: {self.trades} "
            f"(older than {policy.archive_days} days)",
            f"expired sign-in sessions {done('deleted')}: {self.user_sessions}",
            f"expired websocket sessions {done('deleted')}: {self.websocket_sessions}",
        ]
        if self.dry_run:
            out.append(f"database upkeep: {self.vacuum_note or 'ANALYZE'} (not run: dry run)")
        else:
            upkeep = "ANALYZE" if self.analyzed else "no ANALYZE"
            upkeep += ", VACUUM" if self.vacuumed else ""
            out.append(f"database upkeep: {upkeep}{f' ({self.vacuum_note})' if self.vacuum_note else ''}")
        return out


def run_maintenance(
    database: Database, now: datetime, policy: MaintenancePolicy, *, dry_run: bool = False
) -> MaintenanceReport:
    """Run every housekeeping step on ``database`` at ``now`` (aware) and then the database's upkeep;
    with ``dry_run`` only count what each step would remove and change nothing.

    Transactions: activity logs, sign-in sessions and websocket sessions each in a short one; orders and
    trades together in one (all archived or none). Then SQLite ``ANALYZE`` (and ``VACUUM`` when at least
    20 % of the file is free pages), or PostgreSQL ``VACUUM (ANALYZE)`` of the tables that changed, both
    outside any transaction. Raises ValueError for a naive ``now``; SQLAlchemyError / sqlite3.Error from
    the database (a step that failed is rolled back; the steps before it stay done).
    """
    started = time.monotonic()
    now = ensure_aware(now)
    report = MaintenanceReport(dry_run=dry_run)
    if dry_run:
        with database.session_factory() as session:
            report.activity_logs = _count(session, ActivityLog, _old_activity(now, policy.activity_days))
            report.user_sessions = _count(
                session, UserSession, _dead_user_sessions(now, policy.session_idle_hours)
            )
            report.websocket_sessions = _count(session, WebSocketSession, _expired_ws_sessions(now))
            report.orders = _count(session, Order, _movable(Order, _old_orders(now, policy.archive_days)))
            report.trades = _count(session, Trade, _movable(Trade, _old_trades(now, policy.archive_days)))
        report.vacuum_note = _vacuum_plan(database)
        report.seconds = time.monotonic() - started
        return report
    with database.session() as session:
        report.activity_logs = purge_activity_logs(session, now, policy.activity_days)
    with database.session() as session:
        report.user_sessions = purge_user_sessions(session, now, idle_hours=policy.session_idle_hours)
    with database.session() as session:
        report.websocket_sessions = purge_websocket_sessions(session, now)
    with database.session() as session:
        report.orders = archive_orders(session, now, policy.archive_days).archived
        report.trades = archive_trades(session, now, policy.archive_days).archived
    touched = {
        "activity_logs": report.activity_logs,
        "user_sessions": report.user_sessions,
        "websocket_sessions": report.websocket_sessions,
        "orders": report.orders,
        "orders_archive": report.orders,
        "trades": report.trades,
        "trades_archive": report.trades,
    }
    report.touched = [name for name, n in touched.items() if n]
    _upkeep(database, report)
    report.seconds = time.monotonic() - started
    return report


def _sqlite_file(database: Database) -> str | None:
    if database.engine.dialect.name != "sqlite":
        return None
    name = make_url(database.url).database
    return name if name and name != ":memory:" else None


def _vacuum_plan(database: Database) -> str:
    """What the upkeep would do, for a dry run."""
    path = _sqlite_file(database)
    if path is None:
        return "VACUUM (ANALYZE) of the tables that change"
    worth, note = _sqlite_vacuum_worth(path)
    return f"ANALYZE{', VACUUM' if worth else ''} ({note})"


def _sqlite_vacuum_worth(path: str) -> tuple[bool, str]:
    conn = sqlite3.connect(path, timeout=5)
    try:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        conn.close()
    ratio = free / pages if pages else 0.0
    worth = free >= VACUUM_MIN_FREE_PAGES and ratio >= VACUUM_FREE_RATIO
    return worth, f"{free} of {pages} pages free"


def _upkeep(database: Database, report: MaintenanceReport) -> None:
    path = _sqlite_file(database)
    if path is not None:
        worth, report.vacuum_note = _sqlite_vacuum_worth(path)
        # A plain connection in autocommit mode: the app's engine opens a transaction for every
        # statement (session.py), and VACUUM cannot run inside one.
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("ANALYZE")
            report.analyzed = True
            if worth:
                conn.execute("VACUUM")
                report.vacuumed = True
        finally:
            conn.close()
        return
    if database.engine.dialect.name != "postgresql" or not report.touched:
        report.vacuum_note = "" if report.touched else "nothing changed"
        return
    # VACUUM refuses to run in a transaction block: an autocommit connection, one table at a time.
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as pg:
        for name in report.touched:  # our own table names, never user input
            pg.execute(text(f'VACUUM (ANALYZE) "{name}"'))
    report.analyzed = report.vacuumed = True
    report.vacuum_note = "tables: " + ", ".join(report.touched)


def _cutoff(now: datetime, days: int) -> datetime:
    if days < 1:
        raise ValueError("days must be >= 1")
    return ensure_aware(now) - timedelta(days=days)


__all__ = [
    "ARCHIVE_BATCH",
    "ArchiveCounts",
    "BackupError",
    "MaintenancePolicy",
    "MaintenanceReport",
    "archive_orders",
    "archive_trades",
    "backup",
    "backup_file_name",
    "backup_postgres",
    "backup_sqlite",
    "purge_activity_logs",
    "purge_user_sessions",
    "purge_websocket_sessions",
    "run_maintenance",
]
