"""Web requests on SQLite: a GET reads without taking the write lock; any other method holds it from
its first statement, so a request that reads and then writes can never fail because the engine wrote
in between (a deferred SQLite transaction cannot upgrade past a newer commit)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import select, text

from algomirror.db.models import User
from algomirror.web.context import db, release_db
from tests.integration.web_support import make_env


def _other_writer_blocked(path: Path) -> bool:
    other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        other.close()


def _env(tmp_path: Path, sqlite_template: Path) -> tuple[object, Path]:
    path = tmp_path / "web.db"
    path.write_bytes(sqlite_template.read_bytes())
    return make_env(f"sqlite:///{path}", tmp_path), path


def test_db_when_request_is_a_get_reads_without_the_write_lock(tmp_path: Path, sqlite_template: Path) -> None:
    env, path = _env(tmp_path, sqlite_template)
    with env.app.test_request_context("/", method="GET"):  # type: ignore[attr-defined]
        db().execute(select(User.id)).all()
        assert not _other_writer_blocked(path)


def test_db_when_request_is_a_post_holds_the_write_lock_until_released(
    tmp_path: Path, sqlite_template: Path
) -> None:
    env, path = _env(tmp_path, sqlite_template)
    with env.app.test_request_context("/", method="POST"):  # type: ignore[attr-defined]
        db().execute(select(User.id)).all()
        assert _other_writer_blocked(path)
        # An engine write now would wait; the view's own read-then-write cannot be overtaken.
        db().execute(text("UPDATE engine_fence SET heartbeat_at = NULL WHERE id = 1"))
        release_db()  # e.g. before a broker call
        assert not _other_writer_blocked(path)
