"""The app's own slow-statement record: a SQLAlchemy cursor-execute listener that keeps, in memory, the
slowest statements above a threshold (the fallback of the monitoring page when PostgreSQL's
``pg_stat_statements`` is not available, and the only source on SQLite).

Only the statement text is kept, never the bound parameters: they may hold API keys, password hashes or
session tokens. The record lives in the process that installed it (one per web process); it is
reset when the process restarts.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import ExceptionContext

from algomirror.domain.timeutil import utcnow

DEFAULT_THRESHOLD_MS = 100.0
DEFAULT_KEEP = 20
# A statement text longer than this is cut (an IN list of thousands of placeholders says nothing more).
MAX_STATEMENT_CHARS = 2000
_START_KEY = "algomirror_query_started"


@dataclass(frozen=True)
class TimedStatement:
    """One statement text's record above the threshold: ``calls`` executions that took at least the
    threshold, their ``max_ms``/``total_ms`` (milliseconds) and the instant of the latest (aware UTC)."""

    statement: str
    calls: int
    max_ms: float
    total_ms: float
    last_at: datetime

    @property
    def mean_ms(self) -> float:
        """Mean duration in milliseconds of the recorded executions."""
        return self.total_ms / self.calls


class QueryTimings:
    """The ``keep`` slowest statement texts (by their longest execution) that took at least
    ``threshold_ms`` milliseconds. Thread-safe: a web process runs requests on many threads."""

    def __init__(self, threshold_ms: float = DEFAULT_THRESHOLD_MS, keep: int = DEFAULT_KEEP) -> None:
        if threshold_ms < 0:
            raise ValueError("threshold_ms must be >= 0")
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.threshold_ms = threshold_ms
        self.keep = keep
        self._lock = threading.Lock()
        self._entries: dict[str, TimedStatement] = {}

    def record(self, statement: str, elapsed_ms: float, at: datetime) -> None:
        """Count one execution of ``statement`` that took ``elapsed_ms`` milliseconds, if at or above
        the threshold; when more than ``keep`` texts are held the one with the shortest maximum goes."""
        if elapsed_ms < self.threshold_ms:
            return
        text = " ".join(statement.split())[:MAX_STATEMENT_CHARS]
        with self._lock:
            old = self._entries.get(text)
            if old is None:
                self._entries[text] = TimedStatement(text, 1, elapsed_ms, elapsed_ms, at)
            else:
                self._entries[text] = TimedStatement(
                    text, old.calls + 1, max(old.max_ms, elapsed_ms), old.total_ms + elapsed_ms, at
                )
            if len(self._entries) > self.keep:
                fastest = min(self._entries.values(), key=lambda e: e.max_ms)
                del self._entries[fastest.statement]

    def slowest(self) -> list[TimedStatement]:
        """The held statements, slowest (longest single execution) first."""
        with self._lock:
            entries = list(self._entries.values())
        return sorted(entries, key=lambda e: e.max_ms, reverse=True)

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self._entries.clear()


_installed: weakref.WeakKeyDictionary[Engine, QueryTimings] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()


def install(
    engine: Engine, *, threshold_ms: float = DEFAULT_THRESHOLD_MS, keep: int = DEFAULT_KEEP
) -> QueryTimings:
    """Time every statement ``engine`` (and the engines derived from it with ``execution_options``) runs
    and return the :class:`QueryTimings` collecting them. Idempotent: a second call for the same engine
    returns the first record (its threshold and size unchanged)."""
    with _install_lock:
        existing = _installed.get(engine)
        if existing is not None:
            return existing
        timings = QueryTimings(threshold_ms, keep)
        _listen(engine, timings)
        _installed[engine] = timings
        return timings


def installed(engine: Engine) -> QueryTimings | None:
    """The record :func:`install` attached to ``engine``, or None."""
    return _installed.get(engine)


def _listen(engine: Engine, timings: QueryTimings) -> None:
    def before(conn: Connection, cursor: Any, _statement: str, _params: Any, _ctx: Any, _many: bool) -> None:
        # Keyed by cursor: a statement can run inside another's event (nested executes, other cursors).
        conn.info.setdefault(_START_KEY, {})[id(cursor)] = time.perf_counter()

    def after(conn: Connection, cursor: Any, statement: str, _params: Any, _ctx: Any, _many: bool) -> None:
        started: dict[int, float] = conn.info.get(_START_KEY) or {}
        start = started.pop(id(cursor), None)
        if start is None:
            return  # listener installed between this statement's before and after
        # The parameters are deliberately ignored: only the text is kept.
        timings.record(statement, (time.perf_counter() - start) * 1000.0, utcnow())

    def failed(context: ExceptionContext) -> None:
        # A failed statement never reaches "after": drop its start so the map does not grow.
        # The context carries no cursor for every kind of failure (SQLAlchemy's ExceptionContextImpl
        # may lack the attribute): forget the connection's starts, an untimed statement is harmless.
        conn = context.connection
        if conn is not None:
            conn.info.pop(_START_KEY, None)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


__all__ = ["DEFAULT_KEEP", "DEFAULT_THRESHOLD_MS", "QueryTimings", "TimedStatement", "install", "installed"]
