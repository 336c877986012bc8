"""Single-instance guard: one engine per database, fenced by an epoch and watched while held.

PostgreSQL: a session-level advisory lock held on a dedicated connection for the engine's lifetime.
SQLite: an exclusive ``flock`` on a file beside the database file (``<database file>.engine.lock``), so
two engines pointed at the same file conflict whatever their instance folders. An in-memory SQLite
database needs no file lock: no other process can open it.

Both are released by the OS/server if the process dies, so a crash never leaves a stale lock behind.
After winning the lock, :meth:`EngineLock.acquire` takes a new fencing epoch
(:func:`algomirror.engine.fencing.take_epoch`); the journal checks it on every write.

Holding a lock is not the same as *still* holding it: the PostgreSQL lock connection can be killed (a
restart, ``pg_terminate_backend``, a network cut) and the lock file can be deleted and re-created by a
second engine. :meth:`EngineLock.check` verifies, cheaply, that the lock and the epoch are still ours;
the engine service calls it several times a second and stops everything when it fails.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.db.models.engine_fence import FENCE_ROW_ID, EngineFence
from algomirror.domain.timeutil import Clock, SystemClock
from algomirror.engine.fencing import FencedOutError, heartbeat, take_epoch

log = logging.getLogger(__name__)

# Arbitrary but fixed 63-bit key: "AlgoMirror engine".
ADVISORY_LOCK_KEY = 0x416C676F4D697272
# pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
_KEY_HIGH = ADVISORY_LOCK_KEY >> 32
_KEY_LOW = ADVISORY_LOCK_KEY & 0xFFFFFFFF
# One round trip proves three things: the lock connection answers, its backend still holds our key, and
# the stored epoch (read on the same connection).
_PG_CHECK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    " AND granted AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1),"
    " (SELECT epoch FROM engine_fence WHERE id = :fence_id)"
).bindparams(high=_KEY_HIGH, low=_KEY_LOW, fence_id=FENCE_ROW_ID)
# How long release() waits for a watchdog check still running on the lock connection.
_RELEASE_WAIT_SECONDS = 5.0


class EngineAlreadyRunning(Exception):
    """Another engine holds the lock for this database. Reject: do not start; stop the other first."""


class LockLost(Exception):
    """The engine no longer holds its lock or its epoch (the lock connection died, the lock file was
    replaced, or a newer engine took the epoch). Halt: stop sending orders at once and stop the engine;
    never re-take the lock in the same process (a supervisor restarts it)."""


def sqlite_lock_path(url: URL) -> Path | None:
    """The lock file for the SQLite database at ``url``: ``<absolute database path>.engine.lock``, or
    None for an in-memory database (``sqlite://``, ``:memory:``, ``file:…?mode=memory``)."""
    database = url.database or ""
    if database.startswith("file:"):
        # URI filename (``?uri=true``): the path is up to the first "?"; memory mode has no file.
        database = database[len("file:") :].split("?", 1)[0]
        if url.query.get("mode") == "memory":
            return None
    if database in ("", ":memory:"):
        return None
    path = Path(database).expanduser().resolve()
    return path.with_name(path.name + ".engine.lock")


def default_holder() -> str:
    """``host:pid`` of this process, as stored in ``engine_fence.holder``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class EngineLock:
    """Acquire with :meth:`acquire`; verify with :meth:`check`; release with :meth:`release` (also on
    context exit). ``epoch`` is the fencing epoch taken with the lock (None while not held).

    ``clock`` supplies the acquisition and heartbeat instants; ``holder`` defaults to ``host:pid``.
    """

    def __init__(self, engine: Engine, *, clock: Clock | None = None, holder: str | None = None) -> None:
        self._engine = engine
        self._clock: Clock = clock or SystemClock()
        self.holder = holder or default_holder()
        self.dialect = engine.dialect.name
        self.lock_path: Path | None = sqlite_lock_path(engine.url) if self.dialect == "sqlite" else None
        self.epoch: int | None = None
        self._conn: Connection | None = None
        self._conn_guard = threading.Lock()
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self.epoch is not None

    @property
    def check_tolerance(self) -> float:
        """Seconds the engine tolerates not being able to verify this lock before it treats it as lost.

        PostgreSQL: 2 s — the advisory lock dies with its connection and another engine may take it at
        once, so sending must stop quickly. SQLite: 10 s — the ``flock`` lives as long as this process
        holds the file open, so no other engine can take it meanwhile (a removed or replaced file is
        proof of loss, raised at once by :meth:`check`), and every journal write is fenced by the epoch
        anyway; a slow check there means a busy machine (a starved thread), not a lost lock, and stopping
        the engine mid-exit for it did harm.
        """
        return 2.0 if self.dialect == "postgresql" else 10.0

    def acquire(self) -> None:
        """Take the lock, then a new fencing epoch (``self.epoch``).

        Raises :class:`EngineAlreadyRunning` when another engine holds the lock, and
        :class:`~algomirror.engine.fencing.FenceMissingError` or SQLAlchemy errors when the epoch cannot be
        taken (the lock is released again in that case).
        """
        if self.dialect == "postgresql":
            self._acquire_advisory()
        elif self.lock_path is not None:
            self._acquire_file(self.lock_path)
        try:
            with Session(self._engine) as session:
                epoch = take_epoch(session, holder=self.holder, now=self._clock.now())
                session.commit()
        except BaseException:
            self._release_lock()
            raise
        self.epoch = epoch
        log.info("engine lock taken (epoch %d, holder %s)", epoch, self.holder)

    def _acquire_advisory(self) -> None:
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

    def _acquire_file(self, path: Path) -> None:
        # Owner-only like everything beside the database, whatever the umask (fileperms).
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fh = os.fdopen(fd, "a+", encoding="utf-8")  # held open for the lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise EngineAlreadyRunning(
                f"another AlgoMirror engine holds {path} (the lock of this database); stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._file = fh

    def check(self) -> None:
        """Verify that the lock and the epoch are still ours (reads only: it never waits for a writer).

        Blocking (a database round trip): the service runs it in a worker thread. Raises :class:`LockLost`
        when the lock is definitely gone (PostgreSQL: any error on the lock connection, or its backend no
        longer holds the key; SQLite: the lock file was removed or replaced; both: another epoch is
        stored). Other errors (SQLAlchemy errors on an ordinary pool connection) mean "could not verify
        this time" and propagate: the caller decides how long it tolerates that.
        """
        epoch = self._held_epoch()
        if self.dialect == "postgresql":
            self._check_advisory(epoch)
            return
        self._check_file()
        with Session(self._engine) as session:
            stored = session.scalar(select(EngineFence.epoch).where(EngineFence.id == FENCE_ROW_ID))
        if stored != epoch:
            raise LockLost(f"a newer engine took over (epoch {stored}, ours {epoch})")

    def beat(self) -> None:
        """Record a heartbeat in ``engine_fence`` (a database write, which may wait for another writer:
        call it every few seconds, apart from :meth:`check`). Raises :class:`LockLost` when a newer engine
        holds the epoch, and SQLAlchemy errors as they come."""
        epoch = self._held_epoch()
        try:
            with Session(self._engine) as session:
                heartbeat(session, epoch, self._clock.now())
                session.commit()
        except FencedOutError as exc:
            raise LockLost(str(exc)) from exc

    def _held_epoch(self) -> int:
        epoch = self.epoch
        if epoch is None:
            raise LockLost("the engine lock is not held")
        return epoch

    def _check_advisory(self, epoch: int) -> None:
        with self._conn_guard:
            conn = self._conn
            if conn is None or conn.closed or conn.invalidated:
                raise LockLost("the lock connection is closed")
            try:
                row = conn.execute(_PG_CHECK).one()
                conn.commit()
            except SQLAlchemyError as exc:
                # The advisory lock lives and dies with this connection's server session.
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                first = reason[0] if reason else type(exc).__name__
                raise LockLost(f"the lock connection failed: {first}") from exc
        holds, stored = bool(row[0]), row[1]
        if not holds:
            raise LockLost("the database no longer shows our advisory lock")
        if stored != epoch:
            raise LockLost(f"a newer engine took over (epoch {stored}, ours {epoch})")

    def _check_file(self) -> None:
        if self._file is None or self.lock_path is None:
            return  # in-memory database: no file to lose
        held = os.fstat(self._file.fileno())
        try:
            current = os.stat(self.lock_path)
        except FileNotFoundError:
            raise LockLost(f"the lock file {self.lock_path} was removed") from None
        if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
            raise LockLost(f"the lock file {self.lock_path} was replaced")

    def release(self) -> None:
        """Give the lock up (idempotent). A dead lock connection is discarded, not reused."""
        self.epoch = None
        self._release_lock()

    def _release_lock(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # A watchdog check stuck on a hung connection must not keep the engine from exiting.
            got = self._conn_guard.acquire(timeout=_RELEASE_WAIT_SECONDS)
            try:
                if conn.closed:
                    pass
                elif got and not conn.invalidated:
                    try:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                        conn.commit()
                        conn.close()
                    except SQLAlchemyError as exc:
                        log.warning(
                            "engine lock connection was already gone at release: %s", type(exc).__name__
                        )
                        conn.invalidate()
                else:
                    conn.invalidate()
            finally:
                if got:
                    self._conn_guard.release()
        fh, self._file = self._file, None
        if fh is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def __enter__(self) -> EngineLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = [
    "ADVISORY_LOCK_KEY",
    "EngineAlreadyRunning",
    "EngineLock",
    "LockLost",
    "default_holder",
    "sqlite_lock_path",
]
