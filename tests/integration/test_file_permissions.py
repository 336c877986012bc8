"""The instance folder is 0700 and every file AlgoMirror creates in it (keys, SQLite database and its
WAL/SHM, the engine lock file, backups) is owner-only, whatever the umask it was started with; files an
older version left readable are made owner-only at start (issue 9 finding 9)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from algomirror.config import load_settings
from algomirror.db.maintenance import backup
from algomirror.db.migrate import upgrade_url
from algomirror.db.session import Database
from algomirror.engine.lock import EngineLock
from tests.helpers import eventually

EXE = str(Path(sys.executable).parent / "algomirror")
PASSWORD = "a long enough passphrase 42"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask (files 0644, folders 0755), restored afterwards."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of everything under it, by path relative to ``root``."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def readable_by_others(root: Path) -> dict[str, str]:
    return {name: oct(mode) for name, mode in modes(root).items() if mode & 0o077}


def cli(instance: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ALGOMIRROR_INSTANCE_DIR": str(instance), "ALGOMIRROR_DATABASE_URL": ""},
        # The commands are started with a umask that would leave files world-readable.
        preexec_fn=lambda: os.umask(0o022),  # only the child's umask
    )


def test_fresh_instance_when_created_by_the_commands_has_only_owner_only_files(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    assert cli(instance, "db", "upgrade").returncode == 0
    created = cli(instance, "user", "create", "admin", "--email", "a@example.com", "--password-stdin",
                  stdin=PASSWORD + "\n")  # fmt: skip
    assert created.returncode == 0, created.stderr
    backed_up = cli(instance, "backup")
    assert backed_up.returncode == 0, backed_up.stderr
    engine = subprocess.Popen(
        [EXE, "engine"],
        env={**os.environ, "ALGOMIRROR_INSTANCE_DIR": str(instance), "ALGOMIRROR_DATABASE_URL": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.umask(0o022),  # only the child's umask
    )
    try:
        # While the engine runs: the lock file and the WAL/SHM of its open connections exist.
        eventually(
            lambda: (
                {"algomirror.db.engine.lock", "algomirror.db-wal", "algomirror.db-shm"}
                <= {p.name for p in instance.iterdir()}
            ),
            timeout=30,
            what="engine lock file and WAL/SHM",
        )
        names = set(modes(instance))
        assert {".", "secret_key", "fernet.key", "algomirror.db", "backups"} <= names, names
        assert any(name.startswith("backups/algomirror_") for name in names), names
        assert readable_by_others(instance) == {}
        assert modes(instance)["."] == 0o700
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
    assert readable_by_others(instance) == {}


def test_existing_instance_when_files_are_world_readable_is_made_owner_only_at_start(
    tmp_path: Path, loose_umask: None
) -> None:
    instance = tmp_path / "instance"
    assert cli(instance, "db", "upgrade").returncode == 0
    (instance / "backups").mkdir()
    (instance / "backups" / "algomirror_20260101T000000Z.db").write_bytes(b"old backup")
    (instance / "algomirror.db-wal").write_bytes(b"")
    (instance / "notes.txt").write_text("the operator's own file")
    for path in [instance, *instance.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    result = cli(instance, "db", "current")

    assert result.returncode == 0, result.stderr
    loose = readable_by_others(instance)
    assert loose == {"notes.txt": "0o644"}  # only files AlgoMirror made are changed
    assert modes(instance)["."] == 0o700


def test_in_process_start_when_umask_is_loose_still_creates_owner_only_files(
    tmp_path: Path, loose_umask: None
) -> None:
    """The web app may be started by a WSGI server (no CLI umask): the files are private anyway."""
    instance = tmp_path / "instance"
    settings = load_settings(instance_dir=instance, database_url="")
    database = Database(settings.effective_database_url, settings)
    try:
        upgrade_url(settings.effective_database_url)
        with database.engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        lock = EngineLock(database.engine)
        lock.acquire()
        try:
            assert {"algomirror.db-wal", "algomirror.db-shm"} <= {p.name for p in instance.iterdir()}
            backup(settings.effective_database_url, instance / "backups", datetime(2026, 1, 1, tzinfo=UTC))
            assert readable_by_others(instance) == {}
            assert modes(instance)["."] == 0o700
            assert modes(instance)["algomirror.db.engine.lock"] == 0o600
        finally:
            lock.release()
    finally:
        database.dispose()
