"""``algomirror db stats`` and :func:`algomirror.db.stats.collect` on real SQLite and PostgreSQL: row
counts against inserted rows, sizes, the heartbeat written by the real engine lock, account data ages,
the slow-statement fallback when ``pg_stat_statements`` is absent, and the app's own timer."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from algomirror.cli import main
from algomirror.db import query_timing
from algomirror.db.models import User
from algomirror.db.models.engine_fence import EngineFence
from algomirror.db.query_timing import QueryTimings
from algomirror.db.session import Database
from algomirror.db.stats import DbStats, TableStat, collect, text_report
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.lock import EngineLock
from tests.factories import make_account, make_order, make_user

NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
FERNET_KEY = "q0_hD2gqSVbNK3WQXlT5gqk4A8HXrYxZrQ-8pC1ZJ0c="


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    # engine_fence is reference data (kept between tests on PostgreSQL): start as if no engine ever ran.
    with db.session() as s:
        s.execute(update(EngineFence).values(heartbeat_at=None))
    try:
        yield db
    finally:
        db.dispose()


def _seed(database: Database) -> None:
    """3 users, 4 accounts (one archived, one never synced), 5 orders."""
    with database.session() as s:
        alice, bob, _carol = (make_user(s, n) for n in ("alice", "bob", "carol"))
        a1 = make_account(s, alice.id, "alice-main", last_sync_at=NOW - timedelta(seconds=90))
        make_account(s, alice.id, "alice-spare", is_active=False)
        make_account(s, bob.id, "bob-main", last_sync_at=NOW - timedelta(hours=2, minutes=5))
        make_account(s, bob.id, "bob-old", archived_at=NOW - timedelta(days=3), is_active=False)
        for n in range(5):
            make_order(s, a1.id, f"ord-{n}")


def _tables(stats: DbStats) -> dict[str, TableStat]:
    return {t.name: t for t in stats.tables}


def test_collect_when_rows_inserted_counts_match_and_sizes_positive(database: Database) -> None:
    _seed(database)
    stats = collect(database.engine, NOW, stale_after=30.0)
    tables = _tables(stats)
    assert {"users", "trading_accounts", "orders", "alembic_version", "engine_fence"} <= set(tables)
    assert (tables["users"].rows, tables["trading_accounts"].rows, tables["orders"].rows) == (3, 4, 5)
    assert all(t.rows_exact for t in stats.tables)
    for name in ("users", "trading_accounts", "orders"):
        size = tables[name].total_bytes
        assert size is not None and size > 0, name
    assert stats.database_bytes is not None
    assert stats.database_bytes >= max(t.total_bytes or 0 for t in stats.tables)
    assert stats.dialect == database.engine.dialect.name


def test_collect_when_engine_lock_beats_reports_heartbeat_age_and_staleness(database: Database) -> None:
    before = collect(database.engine, NOW, stale_after=30.0).heartbeat
    assert before.heartbeat_at is None and before.age_seconds is None and before.stale

    clock = FakeClock(NOW)
    lock = EngineLock(database.engine, clock=clock)
    lock.acquire()
    try:
        lock.beat()
        fresh = collect(database.engine, NOW + timedelta(seconds=12), stale_after=30.0).heartbeat
        assert fresh.heartbeat_at == NOW
        assert fresh.age_seconds == 12.0
        assert not fresh.stale
        assert (fresh.holder, fresh.epoch) == (lock.holder, lock.epoch)
        stale = collect(database.engine, NOW + timedelta(seconds=31), stale_after=30.0).heartbeat
        assert stale.age_seconds == 31.0 and stale.stale
    finally:
        lock.release()


def test_collect_account_ages_from_last_sync_archived_left_out(database: Database) -> None:
    _seed(database)
    ages = {a.name: a for a in collect(database.engine, NOW, stale_after=30.0).accounts}
    assert set(ages) == {"alice-main", "alice-spare", "bob-main"}
    assert ages["alice-main"].age_seconds == 90.0
    assert ages["alice-main"].username == "alice"
    assert ages["bob-main"].age_seconds == 2 * 3600 + 5 * 60
    assert ages["alice-spare"].last_sync_at is None and ages["alice-spare"].age_seconds is None
    assert not ages["alice-spare"].is_active


def test_collect_when_pg_stat_statements_absent_falls_back_to_app_timings_and_says_so(
    database: Database,
) -> None:
    timings = QueryTimings(threshold_ms=0.0)
    timings.record("SELECT slow_thing FROM somewhere WHERE id = ?", 250.0, NOW)
    with_timings = collect(database.engine, NOW, stale_after=30.0, timings=timings).slow
    without = collect(database.engine, NOW, stale_after=30.0).slow
    if database.engine.dialect.name == "postgresql":
        with database.engine.connect() as conn:
            present = conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"))
            assert present.first() is None  # precondition: the test database has no such extension
        assert "pg_stat_statements is not installed" in with_timings.note
    else:
        assert "SQLite has no statement statistics" in with_timings.note
    assert with_timings.source == "app_timings"
    assert with_timings.threshold_ms == 0.0
    assert [(r.statement, r.calls, r.max_ms) for r in with_timings.rows] == [
        ("SELECT slow_thing FROM somewhere WHERE id = ?", 1, 250.0)
    ]
    assert without.source == "none" and without.rows == []
    assert "per web process" in without.note


def test_collect_when_pg_stat_statements_installed_but_not_loaded_still_reads_the_rest(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("pg_stat_statements is PostgreSQL's")
    database = Database(db_url)
    try:
        with database.engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        with database.engine.connect() as conn:
            loaded = conn.execute(text("SELECT current_setting('shared_preload_libraries')")).scalar_one()
        with database.session() as s:
            make_user(s, "dora")
        stats = collect(database.engine, NOW, stale_after=30.0, timings=QueryTimings())
        if "pg_stat_statements" in str(loaded):
            assert stats.slow.source == "pg_stat_statements"
        else:
            # The failed read of the view is rolled back to its savepoint: the later reads still work.
            assert stats.slow.source == "app_timings"
            assert "installed but cannot be read" in stats.slow.note
            assert "shared_preload_libraries" in stats.slow.note
        assert _tables(stats)["users"].rows == 1
        assert stats.heartbeat.heartbeat_at is None
    finally:
        with database.engine.begin() as conn:
            conn.execute(text("DROP EXTENSION IF EXISTS pg_stat_statements"))
        database.dispose()


def test_query_timer_when_installed_keeps_statement_text_never_parameters(database: Database) -> None:
    _seed(database)
    timings = query_timing.install(database.engine, threshold_ms=0.0, keep=50)
    assert query_timing.install(database.engine) is timings  # idempotent
    assert query_timing.installed(database.engine) is timings
    secret = "s3cret-Param-Value-9188"
    with database.session_factory() as s:
        assert s.scalar(select(User.id).where(User.username == secret)) is None
    recorded = timings.slowest()
    users = [r for r in recorded if "FROM users" in r.statement]
    assert users, [r.statement for r in recorded]
    assert all(r.calls >= 1 and r.max_ms >= 0 for r in recorded)
    assert not any(secret in r.statement for r in recorded)
    # The page's read goes through the same engine: the fallback shows these very statements.
    slow = collect(database.engine, NOW, stale_after=30.0, timings=timings).slow
    assert slow.source == "app_timings"
    assert any("FROM users" in r.statement for r in slow.rows)


def test_query_timer_when_a_statement_fails_lets_the_databases_own_error_through(database: Database) -> None:
    # Found by CI: the failure hook read ``context.cursor``, which SQLAlchemy's context may lack, so every
    # IntegrityError the web turns into an inline message became an AttributeError (a 500).
    query_timing.install(database.engine, threshold_ms=0.0, keep=5)
    with pytest.raises(IntegrityError), database.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id) VALUES (NULL)"))
    with database.session_factory() as s:  # the connection and the timer still work afterwards
        assert s.scalar(select(func.count(User.id))) is not None


def test_query_timings_when_full_drop_the_fastest_and_skip_under_threshold() -> None:
    timings = QueryTimings(threshold_ms=10.0, keep=2)
    timings.record("SELECT 1", 9.9, NOW)  # under the threshold: not kept
    timings.record("SELECT a", 50.0, NOW)
    timings.record("SELECT b", 20.0, NOW)
    timings.record("SELECT  a", 30.0, NOW + timedelta(seconds=1))  # same text once spaces are folded
    timings.record("SELECT c", 40.0, NOW)
    kept = timings.slowest()
    assert [(t.statement, t.calls, t.max_ms, t.total_ms) for t in kept] == [
        ("SELECT a", 2, 50.0, 80.0),
        ("SELECT c", 1, 40.0, 40.0),
    ]
    assert kept[0].mean_ms == 40.0
    assert kept[0].last_at == NOW + timedelta(seconds=1)
    with pytest.raises(ValueError):
        QueryTimings(threshold_ms=-1)


def _cli(args: list[str], url: str, tmp_path: Path) -> Result:
    env = {
        "ALGOMIRROR_DATABASE_URL": url,
        "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance"),
        "ALGOMIRROR_FERNET_KEY": FERNET_KEY,
        "ALGOMIRROR_ALLOW_SQLITE": "true",
    }
    return CliRunner().invoke(main, args, env=env)


def test_db_stats_command_prints_tables_and_json(database: Database, db_url: str, tmp_path: Path) -> None:
    _seed(database)
    result = _cli(["db", "stats"], db_url, tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    users_line = next(line for line in lines if line.split()[:1] == ["users"])
    assert users_line.split()[1] == "3"
    assert "Engine heartbeat: never" in result.output
    assert any("alice-main" in line and "connected" in line for line in lines)
    assert "Slowest statements:" in result.output

    result = _cli(["db", "stats", "--json"], db_url, tmp_path)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    rows = {t["name"]: t["rows"] for t in body["tables"]}
    assert (rows["users"], rows["orders"]) == (3, 5)
    assert body["heartbeat"]["heartbeat_at"] is None
    assert body["slow"]["source"] == "none"
    assert {a["name"] for a in body["accounts"]} == {"alice-main", "alice-spare", "bob-main"}


def test_text_report_when_heartbeat_fresh_names_age_and_accounts(database: Database) -> None:
    _seed(database)
    clock = FakeClock(NOW)
    lock = EngineLock(database.engine, clock=clock)
    lock.acquire()
    try:
        lock.beat()
        report = "\n".join(text_report(collect(database.engine, NOW + timedelta(seconds=7), stale_after=30)))
    finally:
        lock.release()
    assert "Engine heartbeat: 7 s ago (ok, stale after 30 s" in report
    assert "alice-main" in report and "1 min 37 s" in report
    assert "never" in report  # alice-spare was never synced


def test_collect_when_pg_table_estimate_above_limit_shows_estimate_marked(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row estimate: always counted")
    _seed(database)
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE orders"))
    monkeypatch.setattr("algomirror.db.stats.EXACT_COUNT_MAX_ROWS", 2)
    tables = _tables(collect(database.engine, NOW, stale_after=30.0))
    # ANALYZE of a 5-row table gives the planner an estimate of 5 rows: above 2, shown as an estimate.
    assert (tables["orders"].rows, tables["orders"].rows_exact) == (5, False)
    report = "\n".join(text_report(collect(database.engine, NOW, stale_after=30.0)))
    assert re.search(r"^orders +~5 ", report, re.MULTILINE), report


def test_collect_when_sqlite_lacks_dbstat_sizes_unknown_and_said_so(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database.engine.dialect.name != "sqlite":
        pytest.skip("dbstat is SQLite's")
    _seed(database)
    # This SQLite has dbstat compiled in; stand in for a build without it.
    monkeypatch.setattr("algomirror.db.stats.sqlite_dbstat_sizes", lambda _conn: None)
    stats = collect(database.engine, NOW, stale_after=30.0)
    assert all(t.total_bytes is None for t in stats.tables)
    assert _tables(stats)["users"].rows == 3
    assert stats.database_bytes is not None and stats.database_bytes > 0
    assert "no dbstat" in stats.size_note
    assert re.search(r"^users +3 +\?$", "\n".join(text_report(stats)), re.MULTILINE)
