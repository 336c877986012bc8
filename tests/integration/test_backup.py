"""Backups and restores on both databases: round trips through the CLI, and every refusal (corrupt or
truncated file, newer schema, a target holding data, a running engine, the wrong kind) changing nothing."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, select, text

from algomirror.cli import main
from algomirror.db.backup import BackupError, app_revisions, backup, check_backup, restore_backup
from algomirror.db.models import Order, TradingAccount, User
from algomirror.db.session import Database
from algomirror.security import SecretBox
from tests.factories import make_account, make_order, make_user
from tests.schema import private_pg_database

NOW = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
FERNET_KEY = "q0_hD2gqSVbNK3WQXlT5gqk4A8HXrYxZrQ-8pC1ZJ0c="


def _seed(url: str, *, users: tuple[str, ...] = ("priya",)) -> None:
    database = Database(url)
    try:
        with database.session() as session:
            for name in users:
                user = make_user(session, name)
                account = make_account(
                    session,
                    user.id,
                    f"{name}-acct",
                    api_key_encrypted=SecretBox(FERNET_KEY.encode()).encrypt("key-" + name),
                )
                make_order(session, account.id, f"{name}-o1", price=Decimal("112.05"))
    finally:
        database.dispose()


def _snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    """The rows that matter, comparable across databases."""
    database = Database(url)
    try:
        with database.session_factory() as session:
            return {
                "users": [
                    tuple(r) for r in session.execute(select(User.username, User.email).order_by(User.id))
                ],
                "accounts": [
                    tuple(r)
                    for r in session.execute(
                        select(TradingAccount.account_name, TradingAccount.api_key_encrypted).order_by(
                            TradingAccount.id
                        )
                    )
                ],
                "orders": [
                    tuple(r) for r in session.execute(select(Order.order_id, Order.price).order_by(Order.id))
                ],
            }
    finally:
        database.dispose()


@pytest.fixture
def fresh_target(db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as ``db_url`` to restore into."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'target' / 'algomirror.db'}"
        return
    with private_pg_database("am_restore") as url:
        yield url


def _cli(args: list[str], url: str, tmp_path: Path) -> Result:
    env = {
        "ALGOMIRROR_DATABASE_URL": url,
        "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance"),
        "ALGOMIRROR_FERNET_KEY": FERNET_KEY,
        "ALGOMIRROR_ALLOW_SQLITE": "true",
    }
    return CliRunner().invoke(main, args, env=env)


def test_backup_round_trip_when_restored_into_fresh_then_changed_database_data_equal(
    db_url: str, fresh_target: str, tmp_path: Path
) -> None:
    _seed(db_url)
    expected = _snapshot(db_url)
    folder = tmp_path / "bk"
    source = create_engine(db_url)
    with source.connect() as conn:  # a shared test server's database may carry earlier tests' epochs
        backed_up_epoch = conn.execute(text("SELECT coalesce(max(epoch), 0) FROM engine_fence")).scalar()
    source.dispose()

    created = _cli(["backup", "create", "--dest", str(folder)], db_url, tmp_path)
    assert created.exit_code == 0, created.output
    (path,) = list(folder.iterdir())
    # The source changes after the backup: the restore brings back the backup's state, not today's.
    _seed(db_url, users=("later",))

    restored = _cli(["backup", "restore", str(path), "--dest", str(folder)], fresh_target, tmp_path)
    assert restored.exit_code == 0, restored.output
    assert _snapshot(fresh_target) == expected
    assert "ALGOMIRROR_FERNET_KEY" in restored.output and "fernet.key" in restored.output
    assert "decrypts the restored API keys" in restored.output

    # The target now holds data: refused without --force, and unchanged.
    _seed(fresh_target, users=("changed",))
    changed = _snapshot(fresh_target)
    refused = _cli(["backup", "restore", str(path), "--dest", str(folder)], fresh_target, tmp_path)
    assert refused.exit_code == 2
    assert "--force" in refused.output
    assert _snapshot(fresh_target) == changed

    engine = create_engine(fresh_target)
    replaced_epoch = int(backed_up_epoch or 0) + 42
    with engine.begin() as conn:  # engines ran on the target after the backup
        conn.execute(text("UPDATE engine_fence SET epoch = :e"), {"e": replaced_epoch})
    forced = _cli(["backup", "restore", str(path), "--force", "--dest", str(folder)], fresh_target, tmp_path)
    assert forced.exit_code == 0, forced.output
    assert _snapshot(fresh_target) == expected
    with engine.connect() as conn:  # the fencing epoch never goes back
        assert conn.execute(text("SELECT epoch FROM engine_fence")).scalar() == replaced_epoch
    engine.dispose()
    assert "backed up first" in forced.output
    assert len(list(folder.iterdir())) == 2  # the original backup and the replaced database's


def test_restore_when_file_truncated_or_corrupt_refuses_and_changes_nothing(
    db_url: str, fresh_target: str, tmp_path: Path
) -> None:
    _seed(db_url)
    path = backup(db_url, tmp_path / "bk", NOW)
    _prepare(fresh_target)
    before = _snapshot(fresh_target)
    data = path.read_bytes()
    truncated = tmp_path / ("truncated" + path.suffix)
    truncated.write_bytes(data[: len(data) // 2])
    # Cut in the data at the end: the table of contents still reads, only a full read shows it.
    clipped = tmp_path / ("clipped" + path.suffix)
    clipped.write_bytes(data[: len(data) - 300])
    garbage = tmp_path / ("garbage" + path.suffix)
    garbage.write_bytes(b"not a backup at all\n" * 100)

    for cut in (truncated, clipped):
        with pytest.raises(BackupError, match=f"{cut.name} is corrupt or truncated"):
            restore_backup(fresh_target, cut, force=True)
    with pytest.raises(BackupError, match="neither a SQLite database nor a pg_dump"):
        restore_backup(fresh_target, garbage, force=True)
    assert _snapshot(fresh_target) == before


def _prepare(url: str) -> None:
    """Give a fresh target the app's schema and one user, so "unchanged" is observable."""
    from algomirror.db.migrate import upgrade_url

    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade_url(url)
    _seed(url, users=("resident",))


def test_restore_when_backup_schema_is_newer_refuses(db_url: str, fresh_target: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):
        path = backup(db_url, tmp_path / "bk", NOW)
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
        conn.close()
    else:
        # A database at a revision this app does not know, dumped.
        restore_backup(fresh_target, backup(db_url, tmp_path / "src", NOW))
        engine = create_engine(fresh_target)
        with engine.begin() as pg:
            pg.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
        engine.dispose()
        path = backup(fresh_target, tmp_path / "bk", NOW)

    with pytest.raises(BackupError, match=r"9999_from_the_future.*newer version"):
        check_backup(path)
    with pytest.raises(BackupError, match="newer version"):
        restore_backup(db_url, path, force=True)


def test_restore_when_kind_differs_or_engine_runs_refuses(db_url: str, tmp_path: Path) -> None:
    _seed(db_url)
    path = backup(db_url, tmp_path / "bk", NOW)
    other = (
        "postgresql+psycopg://postgres@127.0.0.1:5432/none"
        if db_url.startswith("sqlite")
        else (f"sqlite:///{tmp_path / 'x.db'}")
    )
    with pytest.raises(BackupError, match="backup; the configured database is"):
        restore_backup(other, path, force=True)
    if not db_url.startswith("sqlite"):
        return
    lock_file = Path(db_url.removeprefix("sqlite:///")).resolve()
    lock_file = lock_file.with_name(lock_file.name + ".engine.lock")
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running engine holds
        with pytest.raises(BackupError, match="engine is running"):
            restore_backup(db_url, path, force=True)
    finally:
        os.close(fd)


def test_backup_cli_when_no_subcommand_creates_and_list_prune_work(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "bk"
    for _ in range(3):
        result = _cli(["backup", "--dest", str(folder)], db_url, tmp_path)
        assert result.exit_code == 0, result.output
    assert len(list(folder.iterdir())) == 3

    listed = _cli(["backup", "list", "--dest", str(folder)], db_url, tmp_path)
    assert listed.exit_code == 0 and listed.output.count("algomirror_") == 3

    pruned = _cli(["backup", "prune", "--keep", "1", "--dest", str(folder)], db_url, tmp_path)
    assert pruned.exit_code == 0, pruned.output
    (kept,) = list(folder.iterdir())
    assert check_backup(kept).revision == app_revisions()[1]


def test_pg_tools_when_missing_give_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dump = tmp_path / "x.dump"
    dump.write_bytes(b"PGDMP" + b"\0" * 100)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="pg_restore not found on PATH"):
        check_backup(dump)


def test_backup_cli_runs_as_a_subprocess(tmp_path: Path, sqlite_template: Path) -> None:
    """The installed entry point, not only CliRunner: exit code 2 and one line for a refused restore."""
    db = tmp_path / "app.db"
    db.write_bytes(sqlite_template.read_bytes())
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 300)
    env = {
        **os.environ,
        "ALGOMIRROR_DATABASE_URL": f"sqlite:///{db}",
        "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance"),
        "ALGOMIRROR_FERNET_KEY": FERNET_KEY,
    }
    exe = Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "algomirror"
    if not exe.exists():
        exe = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "algomirror"
    proc = subprocess.run(
        [str(exe), "backup", "restore", str(bad)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("algomirror: restore refused: bad.db")
    assert "Traceback" not in proc.stderr
