"""Engine settings actually in effect: SQLite pragmas on every connection, PostgreSQL pool from settings,
and a one-line reason when the database cannot be reached."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from algomirror.config import load_settings
from algomirror.db.session import Database, DatabaseUnavailable, check_connection, make_engine
from tests.integration.web_support import unused_port
from tests.schema import PG_ADMIN_URL


def test_sqlite_engine_when_connected_has_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    settings = load_settings(instance_dir=tmp_path, sqlite_busy_timeout_ms=7321)
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}", settings)
    try:
        # Two connections: the pragmas are set per connection, not once per file.
        with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
                assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 7321
    finally:
        engine.dispose()


def test_sqlite_engine_when_no_settings_uses_5_second_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_postgres_engine_when_settings_given_applies_pool_size_overflow_recycle_pre_ping(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        instance_dir=tmp_path,
        db_pool_size=3,
        db_max_overflow=4,
        db_pool_recycle=120,
        db_pool_pre_ping=False,
    )
    database = Database(PG_ADMIN_URL, settings)
    try:
        pool = database.engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 4  # type: ignore[attr-defined]
        assert pool._recycle == 120
        assert pool._pre_ping is False
        check_connection(database.engine)
    finally:
        database.dispose()


def test_postgres_engine_when_defaults_uses_the_seed_pool_settings(tmp_path: Path) -> None:
    database = Database(PG_ADMIN_URL, load_settings(instance_dir=tmp_path))
    try:
        pool = database.engine.pool
        assert pool.size() == 10  # type: ignore[attr-defined]
        assert pool._max_overflow == 20  # type: ignore[attr-defined]
        assert pool._recycle == 3600 and pool._pre_ping is True
    finally:
        database.dispose()


def test_check_connection_when_server_down_raises_one_line_without_password() -> None:
    url = f"postgresql+psycopg://postgres:hunter2secret@127.0.0.1:{unused_port()}/nothing"
    engine = make_engine(url)
    try:
        try:
            check_connection(engine)
        except DatabaseUnavailable as exc:
            message = str(exc)
        else:
            raise AssertionError("expected DatabaseUnavailable")
    finally:
        engine.dispose()
    assert message.startswith("database unreachable") and "\n" not in message
    assert "hunter2secret" not in message
