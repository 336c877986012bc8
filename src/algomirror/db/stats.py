"""Database monitoring figures (issue 14 item 5), for ``algomirror db stats`` and the admin monitoring page.

Reads only; never fails because an optional source is missing (each section says where its figures came
from instead):

* **Tables**: every table of the schema with its row count and on-disk size. PostgreSQL: the size is
  ``pg_total_relation_size`` (table, indexes and TOAST); rows are ``count(*)`` when the planner's estimate
  (``pg_class.reltuples``) is small or unknown, else the estimate (a ``count(*)`` of a big table is a full
  scan). SQLite: rows are ``count(*)``; the size is the table's and its indexes' pages from the ``dbstat``
  virtual table when SQLite was compiled with it, else unknown per table (the file's page count still
  gives the database's size).
* **Slowest statements**: ``pg_stat_statements`` when the extension is installed in this database and
  loaded by the server; else the app's own timings (:mod:`algomirror.db.query_timing`) when the caller
  passes them; else none, saying why.
* **Connection pool**: this process's SQLAlchemy pool, and on PostgreSQL the server's connections to this
  database by state (every process: web, engine, CLI).
* **Engine heartbeat** (``engine_fence.heartbeat_at``, written by :meth:`EngineLock.beat`) and each live
  account's **data age** (``trading_accounts.last_sync_at``, the last successful sync).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import QueuePool

from algomirror.db.models.accounts import TradingAccount
from algomirror.db.models.engine_fence import FENCE_ROW_ID, EngineFence
from algomirror.db.models.users import User
from algomirror.db.query_timing import QueryTimings
from algomirror.domain.timeutil import ensure_aware

# At or below this many estimated rows a PostgreSQL table is counted exactly (cheap); above, the
# planner's estimate is shown and marked as such.
EXACT_COUNT_MAX_ROWS = 100_000
DEFAULT_SLOW_LIMIT = 20

SlowSource = Literal["pg_stat_statements", "app_timings", "none"]


@dataclass(frozen=True)
class TableStat:
    """One table: ``rows`` (exact when ``rows_exact``, else the planner's estimate) and ``total_bytes``
    on disk with its indexes (None when the database cannot tell per table)."""

    name: str
    rows: int
    rows_exact: bool
    total_bytes: int | None


@dataclass(frozen=True)
class SlowStatement:
    """A statement text (placeholders, never values) with its calls and durations in milliseconds."""

    statement: str
    calls: int
    mean_ms: float
    max_ms: float
    total_ms: float


@dataclass(frozen=True)
class SlowStatements:
    """The slowest statements and where they came from; ``note`` says why a better source was not used."""

    source: SlowSource
    note: str
    threshold_ms: float | None
    rows: list[SlowStatement]


@dataclass(frozen=True)
class PoolStat:
    """This process's connection pool (``size`` etc. None for pools that do not count; ``overflow`` is
    the connections open beyond ``size``) and, on PostgreSQL, the server's connections to this database
    by state (``{"active": 2, "idle": 5}``)."""

    kind: str
    size: int | None
    checked_out: int | None
    checked_in: int | None
    overflow: int | None
    status: str
    server_connections: dict[str, int] | None


@dataclass(frozen=True)
class HeartbeatStat:
    """The engine's last heartbeat: age in seconds (None when no engine ever beat), stale beyond
    ``stale_after`` seconds."""

    holder: str | None
    epoch: int | None
    heartbeat_at: datetime | None
    age_seconds: float | None
    stale_after: float
    stale: bool


@dataclass(frozen=True)
class AccountAge:
    """One live (not archived) account's data age: seconds since its last successful sync (None: never)."""

    id: int
    name: str
    username: str
    is_active: bool
    connection_status: str
    last_sync_at: datetime | None
    age_seconds: float | None


@dataclass(frozen=True)
class DbStats:
    """Everything the monitoring page and ``algomirror db stats`` show, taken at ``taken_at``."""

    dialect: str
    taken_at: datetime
    database_bytes: int | None
    size_note: str
    tables: list[TableStat]
    slow: SlowStatements
    pool: PoolStat
    heartbeat: HeartbeatStat
    accounts: list[AccountAge] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 UTC strings)."""
        return _jsonable(asdict(self))  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def collect(
    engine: Engine,
    now: datetime,
    *,
    stale_after: float,
    timings: QueryTimings | None = None,
    slow_limit: int = DEFAULT_SLOW_LIMIT,
) -> DbStats:
    """Read the monitoring figures of the database behind ``engine`` at ``now`` (aware UTC).

    ``stale_after`` (seconds) is the heartbeat age beyond which the engine counts as down; ``timings`` is
    the app's own slow-statement record, used when ``pg_stat_statements`` is not available. Raises
    SQLAlchemy errors when the database cannot be read at all (a missing optional source never raises).
    """
    ensure_aware(now)
    # Before our own connection is taken, so the figures are the app's, not this read's.
    pool = _pool_stat(engine)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            tables = _pg_tables(conn)
            database_bytes: int | None = int(
                conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
            )
            size_note = "pg_total_relation_size (table + indexes + TOAST)"
            slow = _pg_slow(conn, timings, slow_limit)
            pool = _with_server_connections(conn, pool)
        else:
            tables, database_bytes, size_note = _sqlite_tables(conn)
            slow = _app_slow(timings, slow_limit, "SQLite has no statement statistics")
        heartbeat = _heartbeat(conn, now, stale_after)
        accounts = _account_ages(conn, now)
        conn.rollback()
    return DbStats(
        dialect=engine.dialect.name,
        taken_at=now,
        database_bytes=database_bytes,
        size_note=size_note,
        tables=tables,
        slow=slow,
        pool=pool,
        heartbeat=heartbeat,
        accounts=accounts,
    )


# --- tables -------------------------------------------------------------------------------------------


def _count(conn: Connection, table: str) -> int:
    quoted = conn.dialect.identifier_preparer.quote(table)
    # The name comes from the database's own catalogue, quoted: not user input.
    return int(conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one())  # noqa: S608


def _pg_tables(conn: Connection) -> list[TableStat]:
    rows = conn.execute(
        text(
            "SELECT c.relname, c.reltuples, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.relname"
        )
    ).all()
    result: list[TableStat] = []
    for name, reltuples, size in rows:
        # reltuples is -1 for a table never vacuumed or analysed: unknown, so count it.
        estimate = float(reltuples)
        if estimate < 0 or estimate <= EXACT_COUNT_MAX_ROWS:
            result.append(TableStat(name, _count(conn, name), True, int(size)))
        else:
            result.append(TableStat(name, int(estimate), False, int(size)))
    return result


def _sqlite_tables(conn: Connection) -> tuple[list[TableStat], int, str]:
    names = list(
        conn.execute(
            text(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " ORDER BY name"
            )
        ).scalars()
    )
    page_size = int(conn.execute(text("PRAGMA page_size")).scalar_one())
    page_count = int(conn.execute(text("PRAGMA page_count")).scalar_one())
    sizes = sqlite_dbstat_sizes(conn)
    if sizes is None:
        note = "per-table sizes unknown (this SQLite has no dbstat); database size = page_count × page_size"
    else:
        note = "dbstat pages (table + indexes); database size = page_count × page_size"
    tables = [
        TableStat(name, _count(conn, name), True, None if sizes is None else sizes.get(name, 0))
        for name in names
    ]
    return tables, page_size * page_count, note


def sqlite_dbstat_sizes(conn: Connection) -> dict[str, int] | None:
    """Bytes on disk per SQLite table, its indexes included, from the ``dbstat`` virtual table; None when
    this SQLite was compiled without it."""
    try:
        rows = conn.execute(
            text(
                "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d"
                " LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1"
            )
        ).all()
    except OperationalError as exc:
        if "dbstat" in str(exc.orig):
            return None  # not compiled in: the caller says so in its note
        raise
    return {str(name): int(size) for name, size in rows}


# --- slowest statements -------------------------------------------------------------------------------


def _pg_slow(conn: Connection, timings: QueryTimings | None, limit: int) -> SlowStatements:
    installed = conn.execute(
        text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    ).scalar_one_or_none()
    if installed is None:
        return _app_slow(timings, limit, "pg_stat_statements is not installed in this database")
    # Installed is not enough: the server must also load it (shared_preload_libraries), else reading
    # the view fails. The savepoint keeps that failure from aborting the rest of the read.
    savepoint = conn.begin_nested()
    try:
        rows = conn.execute(
            text(
                "SELECT query, calls, mean_exec_time, max_exec_time, total_exec_time FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " ORDER BY mean_exec_time DESC LIMIT :limit"
            ),
            {"limit": limit},
        ).all()
    except DBAPIError as exc:
        savepoint.rollback()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return _app_slow(timings, limit, f"pg_stat_statements is installed but cannot be read: {reason}")
    savepoint.commit()
    return SlowStatements(
        source="pg_stat_statements",
        note="pg_stat_statements (this database, since its last reset)",
        threshold_ms=None,
        rows=[
            SlowStatement(str(q), int(c), float(mean), float(mx), float(total))
            for q, c, mean, mx, total in rows
        ],
    )


def _app_slow(timings: QueryTimings | None, limit: int, why: str) -> SlowStatements:
    if timings is None:
        return SlowStatements(
            source="none",
            note=f"{why}; the app's own timings are kept per web process (see the admin monitoring page)",
            threshold_ms=None,
            rows=[],
        )
    return SlowStatements(
        source="app_timings",
        note=f"{why}; showing this process's own timings at or above {timings.threshold_ms:g} ms",
        threshold_ms=timings.threshold_ms,
        rows=[
            SlowStatement(t.statement, t.calls, t.mean_ms, t.max_ms, t.total_ms)
            for t in timings.slowest()[:limit]
        ],
    )


# --- pool ---------------------------------------------------------------------------------------------


def _pool_stat(engine: Engine) -> PoolStat:
    pool = engine.pool
    if isinstance(pool, QueuePool):
        return PoolStat(
            kind=type(pool).__name__,
            size=pool.size(),
            checked_out=pool.checkedout(),
            checked_in=pool.checkedin(),
            # SQLAlchemy counts overflow from -size upwards; only the connections beyond size matter.
            overflow=max(pool.overflow(), 0),
            status=pool.status(),
            server_connections=None,
        )
    return PoolStat(type(pool).__name__, None, None, None, None, pool.status(), None)


def _with_server_connections(conn: Connection, pool: PoolStat) -> PoolStat:
    rows = conn.execute(
        text(
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() GROUP BY 1 ORDER BY 1"
        )
    ).all()
    by_state = {str(state): int(count) for state, count in rows}
    return PoolStat(
        pool.kind, pool.size, pool.checked_out, pool.checked_in, pool.overflow, pool.status, by_state
    )


# --- heartbeat and data age ---------------------------------------------------------------------------


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else (now - ensure_aware(then)).total_seconds()


def _heartbeat(conn: Connection, now: datetime, stale_after: float) -> HeartbeatStat:
    row = conn.execute(
        select(EngineFence.holder, EngineFence.epoch, EngineFence.heartbeat_at).where(
            EngineFence.id == FENCE_ROW_ID
        )
    ).one_or_none()
    holder, epoch, beat = (row.holder, row.epoch, row.heartbeat_at) if row is not None else (None, None, None)
    age = _age(now, beat)
    return HeartbeatStat(
        holder=holder,
        epoch=epoch,
        heartbeat_at=None if beat is None else ensure_aware(beat),
        age_seconds=age,
        stale_after=stale_after,
        stale=age is None or age > stale_after,
    )


def _account_ages(conn: Connection, now: datetime) -> list[AccountAge]:
    rows = conn.execute(
        select(
            TradingAccount.id,
            TradingAccount.account_name,
            User.username,
            TradingAccount.is_active,
            TradingAccount.connection_status,
            TradingAccount.last_sync_at,
        )
        .join(User, User.id == TradingAccount.user_id)
        .where(TradingAccount.archived_at.is_(None))
        .order_by(User.username, TradingAccount.id)
    ).all()
    return [
        AccountAge(
            id=r.id,
            name=r.account_name,
            username=r.username,
            is_active=r.is_active,
            connection_status=r.connection_status,
            last_sync_at=None if r.last_sync_at is None else ensure_aware(r.last_sync_at),
            age_seconds=_age(now, r.last_sync_at),
        )
        for r in rows
    ]


# --- text report --------------------------------------------------------------------------------------


def human_bytes(size: int | None) -> str:
    """``size`` bytes as "12.3 MiB" (binary units); "?" for None."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns first


def human_age(seconds: float | None) -> str:
    """An age in seconds as "42 s", "3 min 5 s", "2 h 10 min" or "3 d 4 h"; "never" for None."""
    if seconds is None:
        return "never"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _grid(header: tuple[str, ...], rows: Iterable[tuple[str, ...]], right: set[int]) -> list[str]:
    body = [header, *rows]
    widths = [max(len(r[i]) for r in body) for i in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body[1:])]


def text_report(stats: DbStats) -> list[str]:
    """``stats`` as readable lines: tables, slowest statements, pool, heartbeat, account data ages."""
    out = [f"Database: {stats.dialect}, {human_bytes(stats.database_bytes)} ({stats.size_note})", ""]
    out += _grid(
        ("table", "rows", "size"),
        (
            (t.name, f"{t.rows}" if t.rows_exact else f"~{t.rows}", human_bytes(t.total_bytes))
            for t in stats.tables
        ),
        {1, 2},
    )
    out += ["", f"Slowest statements: {stats.slow.note}"]
    if stats.slow.rows:
        out += _grid(
            ("mean ms", "max ms", "calls", "statement"),
            (
                (f"{s.mean_ms:.1f}", f"{s.max_ms:.1f}", str(s.calls), s.statement[:100])
                for s in stats.slow.rows
            ),
            {0, 1, 2},
        )
    else:
        out.append("(none recorded)")
    pool = stats.pool
    if pool.size is None:
        out += ["", f"Connection pool (this process): {pool.kind}: {pool.status}"]
    else:
        out += [
            "",
            f"Connection pool (this process): {pool.kind}: {pool.checked_out} in use, {pool.checked_in} idle"
            f" (size {pool.size}, overflow {pool.overflow})",
        ]
    if pool.server_connections is not None:
        states = ", ".join(f"{k} {v}" for k, v in pool.server_connections.items()) or "none"
        out.append(f"Server connections to this database: {states}")
    beat = stats.heartbeat
    out.append("")
    if beat.heartbeat_at is None:
        out.append("Engine heartbeat: never (no engine has run on this database)")
    else:
        verdict = "STALE" if beat.stale else "ok"
        out.append(
            f"Engine heartbeat: {human_age(beat.age_seconds)} ago ({verdict}, stale after "
            f"{beat.stale_after:g} s; holder {beat.holder}, epoch {beat.epoch})"
        )
    out += ["", "Account data age (last successful sync):"]
    if stats.accounts:
        out += _grid(
            ("user", "account", "status", "last sync", "age"),
            (
                (
                    a.username,
                    a.name + ("" if a.is_active else " (inactive)"),
                    a.connection_status,
                    "never" if a.last_sync_at is None else f"{a.last_sync_at:%Y-%m-%d %H:%M:%S} UTC",
                    human_age(a.age_seconds),
                )
                for a in stats.accounts
            ),
            set(),
        )
    else:
        out.append("(no accounts)")
    return out


__all__ = [
    "EXACT_COUNT_MAX_ROWS",
    "AccountAge",
    "DbStats",
    "HeartbeatStat",
    "PoolStat",
    "SlowStatement",
    "SlowStatements",
    "TableStat",
    "collect",
    "human_age",
    "human_bytes",
    "sqlite_dbstat_sizes",
    "text_report",
]
