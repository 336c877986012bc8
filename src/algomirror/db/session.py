"""Engine and session factory for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from algomirror.config import Settings
from algomirror.fileperms import secure_sqlite_files


class DatabaseUnavailable(Exception):
    """The database cannot be reached; ``str(exc)`` is a one-line reason."""


# Execution option naming how a SQLite transaction begins; see _sqlite_begin.
SQLITE_BEGIN = "algomirror_sqlite_begin"


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver's legacy mode runs SELECTs outside any transaction and opens one only before
        # the first write, so read-modify-write loses updates. Switch it off and let _sqlite_begin
        # open every transaction explicitly.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return on_connect


def _sqlite_begin(conn: Connection) -> None:
    """Open every SQLite transaction explicitly, so its reads are inside it. ``BEGIN IMMEDIATE`` for
    connections marked by :meth:`Database.session` (the write lock is taken first: two writers
    serialise instead of one losing its update), ``BEGIN DEFERRED`` otherwise (WAL readers never
    wait; a deferred transaction that writes after another writer committed fails with "database is
    locked" rather than overwrite it)."""
    immediate = conn.get_execution_options().get(SQLITE_BEGIN) == "IMMEDIATE"
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN DEFERRED")


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    """Create an engine with the right pragmas (SQLite) or pool settings (PostgreSQL). A SQLite database
    file is created owner-only (0600) if missing, and its existing companions made so (fileperms)."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            secure_sqlite_files(Path(database))
        busy = settings.sqlite_busy_timeout_ms if settings else 5000
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy / 1000})
        event.listen(engine, "connect", _sqlite_pragmas(busy))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs: dict[str, Any] = {
        "pool_size": settings.db_pool_size if settings else 10,
        "max_overflow": settings.db_max_overflow if settings else 20,
        "pool_recycle": settings.db_pool_recycle if settings else 3600,
        "pool_pre_ping": settings.db_pool_pre_ping if settings else True,
        "connect_args": {"connect_timeout": 5},
    }
    return create_engine(url, **kwargs)


def check_connection(engine: Engine) -> None:
    """Raise :class:`DatabaseUnavailable` with a one-line reason if the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        raise DatabaseUnavailable(
            f"database unreachable ({engine.url.render_as_string()}): {reason}"
        ) from None
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"database error: {str(exc).splitlines()[0]}") from None


class Database:
    """Holds the engine and the session factories; one per process.

    ``session_factory`` makes general-purpose sessions (web requests, reads); :meth:`session` is the
    unit of work for engine writes, which on SQLite holds the write lock from its first statement.
    """

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, settings)
        self.session_factory = sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        self.write_session_factory = sessionmaker(writer, expire_on_commit=False)
        # SQLite has one writer at a time for the whole file. Threads of this process that wait for
        # it in the driver's busy handler sleep in growing steps (up to 100 ms) and miss the moment
        # it is free, so under a burst of short writes (the engine's journal) most of the time went
        # to sleeping. Queueing them on a lock here hands the write lock over at once; other
        # processes still meet the busy timeout. Re-entrant: a nested write in the same thread
        # behaves as before (it waits for the database, not for this lock).
        self._write_lock: AbstractContextManager[object] = (
            threading.RLock() if url.startswith("sqlite") else nullcontext()
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write unit of work: commits on success, rolls back on any exception. On SQLite it begins
        IMMEDIATE (read-modify-write cannot lose an update): keep it short and never across I/O."""
        with self._write_lock:
            session = self.write_session_factory()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    def rehearsal(self) -> Database:
        """This database seen through write units of work that always roll back: code that writes
        with :meth:`session` can run against it to warm its statement caches (a risk breach's path
        before the first one of the day), and nothing it writes is ever committed. Reads through
        ``session_factory`` are real. Shares this database's engine and SQLite writer lock."""
        copy = object.__new__(_Rehearsal)
        copy.__dict__.update(self.__dict__)
        return copy

    def dispose(self) -> None:
        self.engine.dispose()


class _Rehearsal(Database):
    """See :meth:`Database.rehearsal`."""

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._write_lock:
            session = self.write_session_factory()
            try:
                yield session
            finally:
                session.rollback()
                session.close()
