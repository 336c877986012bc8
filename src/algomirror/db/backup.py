"""Backups and restores of the whole database (PRODUCT §8, seed §Backups).

- **SQLite**: a copy through sqlite3's online backup API (consistent while the app writes); restored by
  the same API into the live file, in one write transaction (a failure leaves the target unchanged).
- **PostgreSQL**: ``pg_dump --format=custom``; restored by ``pg_restore`` piped into ``psql
  --single-transaction``, which first drops the ``public`` schema: all of it or none of it.

Before a restore the file is checked (it is what it claims to be, it reads to its end, its schema
revision is one this app knows), the target must hold no data unless forced, and no engine may be running
against it (its lock is held for the whole restore so none can start meanwhile).

Files are named ``algomirror_<UTC stamp>.db|.dump`` and created owner-only: a backup holds password
hashes and the encrypted API keys. The Fernet key that decrypts those keys is **not** in a backup.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from algomirror.domain.timeutil import ensure_aware
from algomirror.fileperms import DIR_MODE, create_private_file

BackupKind = Literal["sqlite", "postgresql"]

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC = b"PGDMP"
_NAME = re.compile(r"^algomirror_(\d{8}T\d{6}Z)\.(db|dump)$")
# Tables whose rows mean "this database is in use": everything a person creates hangs off these.
# Migration-seeded tables (calendar, the fencing row) do not count.
_DATA_TABLES = ("users", "trading_accounts")
# Same key as algomirror.engine.lock (not imported: the db layer does not depend on the engine).
_ADVISORY_LOCK_KEY = 0x416C676F4D697272


class BackupError(Exception):
    """A backup or restore could not be made; ``str(exc)`` is a one-line, user-facing reason (no
    secrets). A restore that raises it has changed nothing."""


@dataclass(frozen=True)
class BackupFile:
    """A backup in a backup folder: its path, kind, size in bytes and the UTC instant in its name."""

    path: Path
    kind: BackupKind
    size: int
    created_at: datetime


@dataclass(frozen=True)
class CheckedBackup:
    """A backup file that passed :func:`check_backup`: its kind and schema revision (``alembic_version``)."""

    path: Path
    kind: BackupKind
    revision: str


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_backup` did: the restored revision, whether the app's head is newer (run
    ``algomirror db upgrade``), and the backup of the replaced database made first (None when the target
    held no data)."""

    revision: str
    head: str
    needs_upgrade: bool
    safety_backup: Path | None


# --- create ---------------------------------------------------------------------------------------------


def backup_file_name(now: datetime, suffix: str) -> str:
    """``algomirror_YYYYMMDDTHHMMSSZ<suffix>`` from an aware instant (UTC in the name, sortable)."""
    return f"algomirror_{ensure_aware(now):%Y%m%dT%H%M%SZ}{suffix}"


def _unique_target(dest_dir: Path, now: datetime, suffix: str) -> Path:
    """The backup path for ``now``; a second backup within the same second never overwrites the first."""
    target = dest_dir / backup_file_name(now, suffix)
    n = 1
    while target.exists():
        target = dest_dir / backup_file_name(now, f"-{n}{suffix}")
        n += 1
    return target


def backup_sqlite(url: str, dest_dir: Path, now: datetime) -> Path:
    """Copy a SQLite database with sqlite3's online backup API (consistent while the app writes).

    Writes ``dest_dir/algomirror_<UTC stamp>.db`` (via a temporary name, renamed when complete) and
    returns its path. Raises BackupError for a non-file URL or a missing database file.
    """
    source = _sqlite_path(url)
    if not source.is_file():
        raise BackupError(f"SQLite database not found: {source}")
    # A folder created here is owner-only; an existing one (``--dest``) is the operator's to set.
    dest_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    target = _unique_target(dest_dir, now, ".db")
    partial = target.with_name(target.name + ".partial")
    # A backup holds password hashes and encrypted keys: owner-only before a byte is written.
    create_private_file(partial)
    src = sqlite3.connect(str(source))
    try:
        dst = sqlite3.connect(str(partial))
        try:
            src.backup(dst)
            # A self-contained file: rollback-journal mode, so reading it never needs -wal/-shm files.
            dst.execute("PRAGMA journal_mode=DELETE")
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
    """Dump a PostgreSQL database with ``pg_dump --format=custom`` (restore with :func:`restore_backup`).

    The password goes to pg_dump through ``PGPASSWORD``, never on the command line. Writes
    ``dest_dir/algomirror_<UTC stamp>.dump`` and returns its path. Raises BackupError when pg_dump is not
    installed or fails (its first error line is in the message).
    """
    parsed = _pg_url(url)
    exe = pg_dump or _tool("pg_dump")
    # A folder created here is owner-only; an existing one (``--dest``) is the operator's to set.
    dest_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    target = _unique_target(dest_dir, now, ".dump")
    partial = target.with_name(target.name + ".partial")
    create_private_file(partial)  # pg_dump truncates and writes it, keeping the mode
    dsn, env = _pg_dsn_env(parsed)
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
        raise BackupError(f"pg_dump failed: {_first_line(proc.stderr, proc.returncode)}")
    partial.replace(target)
    return target


def backup(url: str, dest_dir: Path, now: datetime) -> Path:
    """Back up the database at ``url`` into ``dest_dir``; see backup_sqlite / backup_postgres."""
    if url.startswith("sqlite"):
        return backup_sqlite(url, dest_dir, now)
    return backup_postgres(url, dest_dir, now)


# --- list and prune -----------------------------------------------------------------------------------


def list_backups(dest_dir: Path) -> list[BackupFile]:
    """The backups in ``dest_dir`` (files named like :func:`backup_file_name`), newest first. Other
    files, and unfinished ``.partial`` ones, are ignored; a missing folder has none."""
    if not dest_dir.is_dir():
        return []
    found: list[BackupFile] = []
    for path in dest_dir.iterdir():
        name = path.name
        # "-N" before the suffix marks a second backup within the same second.
        match = _NAME.match(re.sub(r"-\d+(\.(db|dump))$", r"\1", name))
        if match is None or not path.is_file():
            continue
        stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        kind: BackupKind = "sqlite" if match.group(2) == "db" else "postgresql"
        found.append(BackupFile(path, kind, path.stat().st_size, stamp))
    found.sort(key=lambda b: (b.created_at, b.path.name), reverse=True)
    return found


def prune_backups(dest_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``dest_dir``; returns the deleted paths.

    Raises ValueError for ``keep`` < 1 (pruning never deletes the last backup)."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    removed: list[Path] = []
    for old in list_backups(dest_dir)[keep:]:
        old.path.unlink()
        removed.append(old.path)
    return removed


# --- check --------------------------------------------------------------------------------------------


def check_backup(path: Path, *, known_revisions: frozenset[str] | None = None) -> CheckedBackup:
    """Check a backup file without changing anything: its kind (from its first bytes, not its name), that
    it reads completely (SQLite ``integrity_check``; a full ``pg_restore`` read), and its schema revision.

    ``known_revisions`` (default: this app's migrations) are the revisions this app can run; a backup at
    any other revision was made by a newer AlgoMirror and is refused. Raises BackupError naming what is
    wrong.
    """
    if not path.is_file():
        raise BackupError(f"backup file not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head.startswith(SQLITE_MAGIC):
        kind: BackupKind = "sqlite"
        revision = _check_sqlite_file(path)
    elif head.startswith(PG_CUSTOM_MAGIC):
        kind = "postgresql"
        revision = _check_pg_file(path)
    else:
        raise BackupError(
            f"{path.name} is neither a SQLite database nor a pg_dump custom-format file (corrupt, or not "
            "an AlgoMirror backup)"
        )
    known = known_revisions if known_revisions is not None else app_revisions()[0]
    if revision not in known:
        raise BackupError(
            f"{path.name} is at schema revision {revision}, which this AlgoMirror does not know: it was "
            f"made by a newer version (this app's head is {app_revisions()[1]}); upgrade AlgoMirror first"
        )
    return CheckedBackup(path, kind, revision)


def app_revisions() -> tuple[frozenset[str], str]:
    """(every schema revision of this app's migrations, its head revision)."""
    from alembic.script import ScriptDirectory

    from algomirror.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = script.get_heads()
    return frozenset(r.revision for r in script.walk_revisions()), ",".join(sorted(heads))


def _check_sqlite_file(path: Path) -> str:
    try:
        # Read-only: checking a backup must never change it.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{path.name} cannot be opened as SQLite: {exc}") from None
    try:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        # SQLite reads a missing tail as zeros, and integrity_check passes when it held only free pages:
        # the header's size is the proof of a complete copy.
        if path.stat().st_size != pages * page_size:
            raise BackupError(
                f"{path.name} is corrupt or truncated: {path.stat().st_size} bytes where its header says "
                f"{pages * page_size}"
            )
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            raise BackupError(f"{path.name} failed SQLite's integrity check: {rows[0][0]}")
        try:
            found = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.OperationalError:
            raise BackupError(f"{path.name} has no schema revision: not an AlgoMirror backup") from None
    except sqlite3.DatabaseError as exc:
        # "database disk image is malformed", "file is not a database": corrupt or truncated.
        raise BackupError(f"{path.name} is corrupt or truncated: {exc}") from None
    finally:
        conn.close()
    if len(found) != 1:
        raise BackupError(f"{path.name} has no single schema revision: not an AlgoMirror backup")
    return str(found[0][0])


def _check_pg_file(path: Path) -> str:
    exe = _tool("pg_restore")
    listing = _run([exe, "--list", str(path)], f"{path.name} is corrupt or truncated: pg_restore --list")
    if "TABLE DATA public alembic_version" not in listing:
        raise BackupError(f"{path.name} has no schema revision table: not an AlgoMirror backup")
    # --list reads only the table of contents; a truncated data section shows only on a full read.
    _run([exe, "--file=/dev/null", str(path)], f"{path.name} is corrupt or truncated: reading it")
    script = _run(
        [exe, "--data-only", "--table=alembic_version", "--file=-", str(path)], "pg_restore (revision)"
    )
    return _revision_from_copy(script, path.name)


def _revision_from_copy(script: str, name: str) -> str:
    """The one value of ``COPY public.alembic_version … FROM stdin;`` in a restore script."""
    lines = script.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("COPY public.alembic_version"):
            values = []
            for value in lines[i + 1 :]:
                if value == "\\.":
                    break
                values.append(value)
            if len(values) == 1:
                return values[0]
    raise BackupError(f"{name} has no single schema revision: not an AlgoMirror backup")


# --- restore ------------------------------------------------------------------------------------------


def database_has_data(url: str) -> bool:
    """True when the database at ``url`` is in use: a user or an account exists, or it has tables but no
    AlgoMirror schema (someone else's database). A missing SQLite file or an empty database is False.
    Raises BackupError when it cannot be read."""
    if url.startswith("sqlite") and not _sqlite_path(url).exists():
        return False
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if not tables:
                return False
            if "alembic_version" not in tables:
                return True
            for name in _DATA_TABLES:
                query = text(f'SELECT 1 FROM "{name}" LIMIT 1')  # noqa: S608 - a constant table name
                if name in tables and conn.execute(query).first():
                    return True
            return False
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot read the target database: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()


def restore_backup(
    url: str,
    path: Path,
    *,
    force: bool = False,
    safety_dir: Path | None = None,
    now: datetime | None = None,
) -> RestoreResult:
    """Replace the database at ``url`` with the backup at ``path``.

    Checks first (:func:`check_backup`: the file's kind must match the database's), refuses a target that
    holds data unless ``force``, and refuses while an engine runs against it (its lock is then held until
    the restore ends, so none can start). With ``force`` and data present, the current database is backed
    up into ``safety_dir`` (at ``now``) before it is replaced. Raises BackupError (nothing changed) for any
    refusal or failure.
    """
    checked = check_backup(path)
    target_kind: BackupKind = "sqlite" if url.startswith("sqlite") else "postgresql"
    if checked.kind != target_kind:
        raise BackupError(f"{path.name} is a {checked.kind} backup; the configured database is {target_kind}")
    has_data = database_has_data(url)
    if has_data and not force:
        raise BackupError(
            "the target database already holds data (users or accounts); pass --force to replace it "
            "(it is backed up first)"
        )
    _, head = app_revisions()
    safety: Path | None = None
    with _engine_lock(url):
        if has_data and safety_dir is not None:
            safety = backup(url, safety_dir, now or datetime.now(UTC))
        epoch = _fence_epoch(url)
        if target_kind == "sqlite":
            _restore_sqlite(_sqlite_path(url), path)
        else:
            _restore_pg(_pg_url(url), path)
        _keep_fence_epoch(url, epoch)
    return RestoreResult(checked.revision, head, checked.revision != head, safety)


def _restore_sqlite(target: Path, source: Path) -> None:
    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if not target.exists():
        create_private_file(target)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(str(target), timeout=10)
        try:
            # One write transaction on the target: readers see the old or the new database, never a mix.
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")  # the app's mode (the backup file is in DELETE mode)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite restore failed (the database is unchanged): {exc}") from None
    finally:
        src.close()


def _restore_pg(parsed: URL, source: Path) -> None:
    restore_exe, psql_exe = _tool("pg_restore"), _tool("psql")
    dsn, env = _pg_dsn_env(parsed)
    # pg_restore writes the SQL (with the data as COPY blocks) to psql, which runs the schema drop and all
    # of it in one transaction with ON_ERROR_STOP: a failure anywhere rolls everything back.
    try:
        producer = subprocess.Popen(
            [restore_exe, "--no-owner", "--no-privileges", "--file=-", str(source)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise BackupError(f"could not run pg_restore: {exc}") from None
    assert producer.stdout is not None
    try:
        consumer = subprocess.run(
            [
                psql_exe,
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                f"--dbname={dsn}",
                "--command=DROP SCHEMA IF EXISTS public CASCADE",
                "--command=CREATE SCHEMA public",
                "--file=-",
            ],
            stdin=producer.stdout,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    except OSError as exc:
        producer.kill()
        raise BackupError(f"could not run psql: {exc}") from None
    finally:
        producer.stdout.close()
        producer_err = producer.stderr.read().decode(errors="replace") if producer.stderr else ""
        producer.wait()
    if producer.returncode != 0:
        raise BackupError(
            f"pg_restore failed (the database is unchanged): {_first_line(producer_err, producer.returncode)}"
        )
    if consumer.returncode != 0:
        raise BackupError(
            f"restore failed (the database is unchanged): {_first_line(consumer.stderr, consumer.returncode)}"
        )


def _fence_epoch(url: str) -> int | None:
    """The target's fencing epoch (``engine_fence``), or None without one (a new database)."""
    if url.startswith("sqlite") and not _sqlite_path(url).exists():
        return None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "engine_fence" not in inspect(conn).get_table_names():
                return None
            value = conn.execute(text("SELECT MAX(epoch) FROM engine_fence")).scalar()
            return int(value) if value is not None else None
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot read the target database: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()


def _keep_fence_epoch(url: str, epoch: int | None) -> None:
    """The epoch only grows (algomirror.engine.fencing): a restored older value is raised back to the
    replaced database's, so an engine fenced out before the restore stays fenced out after it."""
    if epoch is None:
        return
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if "engine_fence" in inspect(conn).get_table_names():
                conn.execute(text("UPDATE engine_fence SET epoch = :e WHERE epoch < :e"), {"e": epoch})
    except SQLAlchemyError as exc:
        raise BackupError(
            f"restored, but the engine's fencing epoch could not be kept at {epoch}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()


@contextmanager
def _engine_lock(url: str) -> Iterator[None]:
    """Hold the engine's single-instance lock (see algomirror.engine.lock) for the block; BackupError
    when an engine holds it."""
    running = "an AlgoMirror engine is running against this database; stop it (and the app) first"
    if url.startswith("sqlite"):
        path = _sqlite_path(url).resolve()
        lock_path = path.with_name(path.name + ".engine.lock")
        lock_path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackupError(running) from None
            yield
        finally:
            os.close(fd)  # closing releases the flock
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _ADVISORY_LOCK_KEY}).scalar()
            conn.commit()
            if not got:
                raise BackupError(running)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_LOCK_KEY})
                conn.commit()
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot reach the target database: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()


# --- helpers ------------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        raise BackupError(f"not a SQLite URL: {parsed.drivername}")
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("in-memory SQLite databases cannot be backed up or restored")
    return Path(parsed.database)


def _pg_url(url: str) -> URL:
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise BackupError(f"not a PostgreSQL URL: {parsed.drivername}")
    return parsed


def _pg_dsn_env(parsed: URL) -> tuple[str, dict[str, str]]:
    """A libpq DSN without the password, and an environment carrying it as ``PGPASSWORD`` (a password on
    a command line is visible to every user of the machine)."""
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    dsn = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return dsn, env


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if not exe:
        raise BackupError(
            f"{name} not found on PATH: install the PostgreSQL client tools (same or newer major version "
            "as the server)"
        )
    return exe


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
    except OSError as exc:
        raise BackupError(f"could not run {argv[0]}: {exc}") from None
    if proc.returncode != 0:
        raise BackupError(f"{what} failed: {_first_line(proc.stderr, proc.returncode)}")
    return proc.stdout


def _first_line(stderr: str | None, code: int) -> str:
    lines = (stderr or "").strip().splitlines()
    return lines[0] if lines else f"exit code {code}"
