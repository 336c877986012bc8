"""``algomirror maintenance …`` and ``algomirror backup …``: the database's housekeeping and backups
(registered on the main command group by :mod:`algomirror.cli`)."""

from __future__ import annotations

import click

# --- maintenance and backup -------------------------------------------------------------------------


@click.group()
def maintenance() -> None:
    """Database housekeeping (the engine also runs it daily after the close)."""


@maintenance.command("run")
def maintenance_run() -> None:
    """Delete old activity logs and expired sign-in sessions, archive old orders and trades (retention
    from settings); print the counts."""
    from algomirror.cli import _db_url_or_exit, settings_or_exit
    from algomirror.db.maintenance import (
        archive_orders,
        archive_trades,
        purge_activity_logs,
        purge_user_sessions,
    )
    from algomirror.db.session import Database
    from algomirror.domain.timeutil import utcnow

    settings = settings_or_exit()
    url = _db_url_or_exit()
    now = utcnow()
    database = Database(url, settings)
    try:
        with database.session() as session:
            purged = purge_activity_logs(session, now, days=settings.activity_retention_days)
            counts = archive_orders(session, now, days=settings.order_archive_days)
            trades = archive_trades(session, now, days=settings.order_archive_days)
            sessions = purge_user_sessions(session, now, idle_hours=settings.session_idle_hours)
    finally:
        database.dispose()
    click.echo(
        f"activity logs deleted: {purged} (older than {settings.activity_retention_days} days); "
        f"orders archived: {counts.archived}, trades archived: {trades.archived} "
        f"(older than {settings.order_archive_days} days); expired sign-in sessions deleted: {sessions}"
    )


@click.command("backup")
@click.option(
    "--dest",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory for the backup file (default: INSTANCE_DIR/backups).",
)
def backup_command(dest: str | None) -> None:
    """Back up the database: SQLite online copy, or pg_dump (custom format) for PostgreSQL."""
    from pathlib import Path

    from algomirror.cli import _db_url_or_exit, fail, settings_or_exit
    from algomirror.db.maintenance import BackupError, backup
    from algomirror.domain.timeutil import utcnow

    settings = settings_or_exit()
    url = _db_url_or_exit()
    try:
        path = backup(url, Path(dest) if dest else settings.instance_dir / "backups", utcnow())
    except BackupError as exc:
        fail(str(exc))
    click.echo(f"backup written: {path}")
