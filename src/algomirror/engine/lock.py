"""Single-instance guard: one engine per database.

PostgreSQL: a session-level advisory lock held on a dedicated connection for the engine's lifetime.
SQLite: an exclusive ``flock`` on ``<instance_dir>/engine.lock``. Both are released by the OS/server
if the process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text

# Arbitrary but fixed 63-bit key: "AlgoMirror engine".
ADVISORY_LOCK_KEY = 0x416C676F4D697272


class EngineAlreadyRunning(Exception):
    """Another engine holds the lock for this database."""


class EngineLock:
    """Acquire with :meth:`acquire`; release with :meth:`release` (also on context exit)."""

    def __init__(self, engine: Engine, instance_dir: Path) -> None:
        self._engine = engine
        self._lock_path = instance_dir / "engine.lock"
        self._conn: Connection | None = None
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Raises :class:`EngineAlreadyRunning` when another engine holds the lock."""
        if self._engine.dialect.name == "postgresql":
            conn = self._engine.connect()
            try:
                got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}).scalar()
                conn.commit()
            except BaseException:
                conn.close()
                raise
            if not got:
                conn.close()
                raise EngineAlreadyRunning("another AlgoMirror engine is running against this database")
            self._conn = conn
            return
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self._lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise EngineAlreadyRunning(
                f"another AlgoMirror engine holds {self._lock_path}; stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._file = fh

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            self._conn.commit()
            self._conn.close()
            self._conn = None
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> EngineLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
