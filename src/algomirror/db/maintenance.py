"""Housekeeping: activity-log retention, order and trade archiving, and backups (PRODUCT §8 jobs, seed
§Maintenance).

The cleanups run inside the caller's session and transaction (they flush nothing else and never commit),
so the engine's daily job and ``algomirror maintenance run`` both decide when to commit.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, and_, delete, insert, literal, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, class_mapper

from algomirror.db.models.books import Order, OrderArchive, Trade, TradeArchive
from algomirror.db.models.users import ActivityLog, UserSession
from algomirror.domain.timeutil import ensure_aware
from algomirror.fileperms import DIR_MODE, create_private_file

# Rows are moved in batches so one statement never carries an unbounded id list.
ARCHIVE_BATCH = 500


class BackupError(Exception):
    """A backup could not be made; ``str(exc)`` is a one-line, user-facing reason (no secrets)."""


@dataclass(frozen=True)
class ArchiveCounts:
    archived: int
    deleted: int


def purge_activity_logs(session: Session, now: datetime, days: int = 90) -> int:
    """Delete activity-log rows older than ``days`` days before ``now`` (aware). Returns the count.

    Raises ValueError for a naive ``now`` or ``days`` < 1.
    """
    cutoff = _cutoff(now, days)
    result = session.execute(
        delete(ActivityLog).where(ActivityLog.timestamp < cutoff).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def purge_user_sessions(session: Session, now: datetime, *, idle_hours: int) -> int:
    """Delete sign-in sessions that can no longer be used: past their absolute expiry, or (without
    Remember me) idle longer than ``idle_hours``. Returns the count. Raises ValueError for a naive
    ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be aware")
    idle_cutoff = now - timedelta(hours=idle_hours)
    result = session.execute(
        delete(UserSession)
        .where(
            (UserSession.expires_at <= now)
            | (UserSession.remember.is_(False) & (UserSession.last_seen_at < idle_cutoff))
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def archive_orders(session: Session, now: datetime, days: int = 30) -> ArchiveCounts:
    """Move orders placed more than ``days`` days before ``now`` to ``orders_archive`` (same ids, plus
    ``archived_at = now``). Copy and delete are by explicit id, so a row inserted meanwhile is never deleted
    without being archived. Runs in the caller's transaction: commit once for all-or-nothing.

    Raises ValueError for a naive ``now`` or ``days`` < 1.
    """
    cutoff = _cutoff(now, days)
    return _move(session, Order, OrderArchive, Order.placed_at < cutoff, ensure_aware(now))


def archive_trades(session: Session, now: datetime, days: int = 30) -> ArchiveCounts:
    """Move trades older than ``days`` days before ``now`` to ``trades_archive`` (same ids, plus
    ``archived_at = now``), like :func:`archive_orders`. A trade's age is its ``traded_at``; one whose
    broker gave only a time of day (``traded_at`` NULL) is aged by ``created_at``, when sync first saw it.
    Runs in the caller's transaction: commit once for all-or-nothing.

    Raises ValueError for a naive ``now`` or ``days`` < 1.
    """
    cutoff = _cutoff(now, days)
    old = or_(Trade.traded_at < cutoff, and_(Trade.traded_at.is_(None), Trade.created_at < cutoff))
    return _move(session, Trade, TradeArchive, old, ensure_aware(now))


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
    archived = deleted = 0
    last_id = 0
    while True:
        ids = list(
            session.scalars(
                select(model.id).where(old, model.id > last_id).order_by(model.id).limit(ARCHIVE_BATCH)
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


def backup_file_name(now: datetime, suffix: str) -> str:
    """``algomirror_YYYYMMDDTHHMMSSZ<suffix>`` from an aware instant (UTC in the name, sortable)."""
    return f"algomirror_{ensure_aware(now):%Y%m%dT%H%M%SZ}{suffix}"


def backup_sqlite(url: str, dest_dir: Path, now: datetime) -> Path:
    """Copy a SQLite database with sqlite3's online backup API (consistent while the app writes).

    Writes ``dest_dir/algomirror_<UTC stamp>.db`` (via a temporary name, renamed when complete) and
    returns its path. Raises BackupError for a non-file URL or a missing database file.
    """
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        raise BackupError(f"not a SQLite URL: {parsed.drivername}")
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("in-memory SQLite databases cannot be backed up")
    source = Path(parsed.database)
    if not source.is_file():
        raise BackupError(f"SQLite database not found: {source}")
    # A folder created here is owner-only; an existing one (``--dest``) is the operator's to set.
    dest_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    target = dest_dir / backup_file_name(now, ".db")
    partial = target.with_name(target.name + ".partial")
    # A backup holds password hashes and encrypted keys: owner-only before a byte is written.
    create_private_file(partial)
    src = sqlite3.connect(str(source))
    try:
        dst = sqlite3.connect(str(partial))
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"SQLite backup failed: {exc}") from None
    finally:
        src.close()
    partial.replace(target)
    return target


def backup_postgres(url: str, dest_dir: Path, now: datetime, *, pg_dump: str | None = None) -> Path:
    """Dump a PostgreSQL database with ``pg_dump --format=custom`` (restore with ``pg_restore``).

    The password goes to pg_dump through ``PGPASSWORD``, never on the command line. Writes
    ``dest_dir/algomirror_<UTC stamp>.dump`` and returns its path. Raises BackupError when pg_dump is not
    installed or fails (its first error line is in the message).
    """
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise BackupError(f"not a PostgreSQL URL: {parsed.drivername}")
    exe = pg_dump or shutil.which("pg_dump")
    if not exe:
        raise BackupError(
            "pg_dump not found on PATH: install the PostgreSQL client tools (same or newer major version "
            "as the server)"
        )
    # A folder created here is owner-only; an existing one (``--dest``) is the operator's to set.
    dest_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    target = dest_dir / backup_file_name(now, ".dump")
    partial = target.with_name(target.name + ".partial")
    create_private_file(partial)  # pg_dump truncates and writes it, keeping the mode
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    dsn = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    try:
        proc = subprocess.run(
            [exe, "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={dsn}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"could not run pg_dump: {exc}") from None
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        lines = (proc.stderr or "").strip().splitlines()
        raise BackupError(f"pg_dump failed: {lines[0] if lines else f'exit code {proc.returncode}'}")
    partial.replace(target)
    return target


def backup(url: str, dest_dir: Path, now: datetime) -> Path:
    """Back up the database at ``url`` into ``dest_dir``; see backup_sqlite / backup_postgres."""
    if url.startswith("sqlite"):
        return backup_sqlite(url, dest_dir, now)
    return backup_postgres(url, dest_dir, now)


def _cutoff(now: datetime, days: int) -> datetime:
    if days < 1:
        raise ValueError("days must be >= 1")
    return ensure_aware(now) - timedelta(days=days)
