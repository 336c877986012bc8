"""``algomirror maintenance …`` and ``algomirror backup …``: the database's housekeeping and backups
(registered on the main command group by :mod:`algomirror.cli`). See docs/operations.md."""

from __future__ import annotations

import logging
from pathlib import Path

import click

log = logging.getLogger("algomirror.maintenance")

DEFAULT_BACKUP_KEEP = 14

# --- maintenance --------------------------------------------------------------------------------------


@click.group()
def maintenance() -> None:
    """Database housekeeping (the engine also runs it daily after the close)."""


@maintenance.command("run")
@click.option("--dry-run", is_flag=True, help="Only count what each step would remove; change nothing.")
def maintenance_run(dry_run: bool) -> None:
    """Delete old activity logs and expired sign-in and websocket sessions, archive old orders and trades
    (retention from settings), then ANALYZE / VACUUM as fits the database; print the counts. Safe while
    the app runs."""
    from sqlalchemy.exc import SQLAlchemyError

    from algomirror.cli import _db_url_or_exit, fail, settings_or_exit
    from algomirror.db.maintenance import MaintenancePolicy, run_maintenance
    from algomirror.db.session import Database
    from algomirror.domain.timeutil import utcnow

    settings = settings_or_exit()
    url = _db_url_or_exit()
    policy = MaintenancePolicy(
        activity_days=settings.activity_retention_days,
        archive_days=settings.order_archive_days,
        session_idle_hours=settings.session_idle_hours,
    )
    database = Database(url, settings)
    try:
        report = run_maintenance(database, utcnow(), policy, dry_run=dry_run)
    except SQLAlchemyError as exc:
        fail(f"maintenance failed (the failing step was rolled back): {str(exc).splitlines()[0]}")
    finally:
        database.dispose()
    for line in report.lines(policy):
        click.echo(line)
        log.info("maintenance%s: %s", " (dry run)" if dry_run else "", line)


# --- backup -------------------------------------------------------------------------------------------

_dest_option = click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="ALGOMIRROR_BACKUP_DIR",
    help="Backup folder (default: INSTANCE_DIR/backups; env ALGOMIRROR_BACKUP_DIR).",
)


def _backup_dir(dest: Path | None) -> Path:
    from algomirror.cli import settings_or_exit

    return dest if dest is not None else settings_or_exit().instance_dir / "backups"


@click.group("backup", invoke_without_command=True)
@_dest_option
@click.pass_context
def backup_command(ctx: click.Context, dest: Path | None) -> None:
    """Backups: create (also with no subcommand), list, restore FILE, prune. SQLite is copied online;
    PostgreSQL is dumped with pg_dump. The Fernet key is never in a backup: keep it separately."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(backup_create, dest=dest, keep=None)


@backup_command.command("create")
@_dest_option
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    envvar="ALGOMIRROR_BACKUP_KEEP",
    help="After the backup, keep only the newest N in the folder (env ALGOMIRROR_BACKUP_KEEP).",
)
def backup_create(dest: Path | None, keep: int | None) -> None:
    """Back up the database into the backup folder; safe while the app runs."""
    from algomirror.cli import _db_url_or_exit, fail
    from algomirror.db.backup import BackupError, backup, prune_backups
    from algomirror.domain.timeutil import utcnow

    url = _db_url_or_exit()
    folder = _backup_dir(dest)
    try:
        path = backup(url, folder, utcnow())
    except BackupError as exc:
        fail(str(exc))
    click.echo(f"backup written: {path}")
    log.info("backup written: %s", path)
    if keep is not None:
        for removed in prune_backups(folder, keep):
            click.echo(f"pruned: {removed}")


@backup_command.command("list")
@_dest_option
def backup_list(dest: Path | None) -> None:
    """List the backups in the backup folder, newest first (time in UTC, size in bytes)."""
    from algomirror.db.backup import list_backups

    folder = _backup_dir(dest)
    found = list_backups(folder)
    if not found:
        click.echo(f"no backups in {folder}")
        return
    for item in found:
        click.echo(f"{item.created_at:%Y-%m-%d %H:%M:%S} UTC  {item.kind:<10}  {item.size:>12}  {item.path}")


@backup_command.command("prune")
@_dest_option
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=DEFAULT_BACKUP_KEEP,
    show_default=True,
    envvar="ALGOMIRROR_BACKUP_KEEP",
    help="How many of the newest backups to keep (env ALGOMIRROR_BACKUP_KEEP).",
)
def backup_prune(dest: Path | None, keep: int) -> None:
    """Delete all but the newest KEEP backups in the backup folder."""
    from algomirror.db.backup import prune_backups

    folder = _backup_dir(dest)
    removed = prune_backups(folder, keep)
    for path in removed:
        click.echo(f"deleted: {path}")
    click.echo(f"kept the newest {keep}; deleted {len(removed)}")


@backup_command.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that already holds data (backed up first).")
@_dest_option
def backup_restore(file: Path, force: bool, dest: Path | None) -> None:
    """Replace the configured database with the backup FILE.

    The file is checked first (a SQLite or pg_dump file that reads to its end, at a schema revision this
    app knows); a database that holds data is replaced only with --force, after a backup of it into the
    backup folder. Stop the app and the engine first.
    """
    from algomirror.cli import _db_url_or_exit, fail, settings_or_exit
    from algomirror.db.backup import BackupError, restore_backup
    from algomirror.domain.timeutil import utcnow

    settings = settings_or_exit()
    url = settings.effective_database_url
    if not settings.is_sqlite:
        url = _db_url_or_exit()  # a PostgreSQL server that cannot be reached is a one-line error
    try:
        result = restore_backup(url, file, force=force, safety_dir=_backup_dir(dest), now=utcnow())
    except BackupError as exc:
        fail(f"restore refused: {exc}")
    if result.safety_backup is not None:
        click.echo(f"the replaced database was backed up first: {result.safety_backup}")
    click.echo(f"restored {file} (schema revision {result.revision})")
    log.info("restored %s (schema revision %s)", file, result.revision)
    if result.needs_upgrade:
        click.echo(f"this app's schema is newer ({result.head}): run `algomirror db upgrade` before starting")
    click.echo(
        "The API keys in a backup are encrypted with the Fernet key of the installation that made it, and "
        "that key is not in the backup: set ALGOMIRROR_FERNET_KEY to it, or put it in "
        f"{settings.instance_dir / 'fernet.key'} (INSTANCE_DIR/fernet.key), before starting the app."
    )
    verdict = _fernet_verdict(url, settings.fernet_key_value())
    if verdict:
        click.echo(verdict)


def _fernet_verdict(url: str, key: bytes) -> str:
    """Whether ``key`` (the Fernet key configured now) reads the restored accounts' API keys: one line, or
    empty when no account has a stored key."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from algomirror.db.models.accounts import TradingAccount
    from algomirror.db.session import Database
    from algomirror.security import SecretBox

    database = Database(url)
    try:
        with database.session_factory() as session:
            token = session.scalar(
                select(TradingAccount.api_key_encrypted)
                .where(TradingAccount.api_key_encrypted.is_not(None))
                .limit(1)
            )
    except SQLAlchemyError as exc:
        return f"could not check the Fernet key against the restored accounts: {str(exc).splitlines()[0]}"
    finally:
        database.dispose()
    if token is None:
        return ""
    try:
        SecretBox(key).decrypt(token)
    except ValueError:
        return (
            "WARNING: the Fernet key configured now does NOT decrypt the restored API keys: install the "
            "key of the installation that made the backup"
        )
    return "the Fernet key configured now decrypts the restored API keys"


# --- db stats -----------------------------------------------------------------------------------------


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of tables.")
def db_stats(as_json: bool) -> None:
    """Table row counts and sizes, slowest statements (pg_stat_statements where available), connection
    pool, engine heartbeat and each account's data age. Reads only; safe while the app runs."""
    import json

    from sqlalchemy.exc import SQLAlchemyError

    from algomirror.cli import _db_url_or_exit, fail, settings_or_exit
    from algomirror.db.session import Database
    from algomirror.db.stats import collect, text_report
    from algomirror.domain.timeutil import utcnow

    settings = settings_or_exit()
    url = _db_url_or_exit()
    database = Database(url, settings)
    try:
        stats = collect(database.engine, utcnow(), stale_after=settings.engine_heartbeat_stale_seconds)
    except SQLAlchemyError as exc:
        fail(f"could not read the database statistics: {str(exc).splitlines()[0]}")
    finally:
        database.dispose()
    if as_json:
        click.echo(json.dumps(stats.to_json(), indent=2))
        return
    for line in text_report(stats):
        click.echo(line)
