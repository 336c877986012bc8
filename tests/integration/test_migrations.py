"""The migration history: one head, no drift from the models, reversible, the expected tables and the
seeded reference rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from algomirror.db.migrate import alembic_config, downgrade_url, upgrade_url
from algomirror.db.models import Base
from tests.schema import REFERENCE_TABLES

SEED_TABLES = {
    "users",
    "trading_accounts",
    "orders",
    "positions",
    "holdings",
    "activity_logs",
    "strategies",
    "strategy_legs",
    "strategy_executions",
    "margin_requirements",
    "trade_qualities",
    "margin_trackers",
    "risk_events",
    "trading_settings",
    "websocket_sessions",
    "trading_hours_templates",
    "market_holidays",
    "special_trading_sessions",
    "websocket_connections",
    "failover_events",
    # From the older seed (000).
    "trading_sessions",
    # Named by the seed's maintenance section.
    "orders_archive",
}
OUR_TABLES = {
    "app_settings",
    "account_funds",
    "trades",
    "trades_archive",
    "order_intents",
    "engine_commands",
    "strategy_runs",
    "engine_fence",
    "user_sessions",
    "index_quotes",
    "engine_alerts",
    "mirror_acceptances",
    "run_pnl_samples",
    "trading_setting_revisions",
}


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "target_metadata": Base.metadata}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_heads_when_scripts_loaded_exactly_one() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_upgrade_when_database_empty_autogenerate_finds_no_diff(empty_db_url: str) -> None:
    upgrade_url(empty_db_url, "head")

    assert _diff(empty_db_url) == []


def test_downgrade_when_at_head_removes_everything_and_upgrade_works_again(empty_db_url: str) -> None:
    upgrade_url(empty_db_url, "head")

    downgrade_url(empty_db_url, "base")
    assert _tables(empty_db_url) <= {"alembic_version"}

    upgrade_url(empty_db_url, "head")
    assert _tables(empty_db_url) == SEED_TABLES | OUR_TABLES | {"alembic_version"}
    assert _diff(empty_db_url) == []


def test_tables_when_at_head_are_the_seed_tables_plus_ours(db_url: str) -> None:
    assert _tables(db_url) == SEED_TABLES | OUR_TABLES | {"alembic_version"}
    assert set(Base.metadata.tables) == SEED_TABLES | OUR_TABLES


def test_reference_tables_when_migrated_are_exactly_the_seeded_ones(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            non_empty = {
                name
                for name in SEED_TABLES | OUR_TABLES
                if conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar_one() > 0
            }
    finally:
        engine.dispose()
    assert non_empty | {"alembic_version"} == set(REFERENCE_TABLES)


def test_reference_rows_when_migrated_hold_the_calendar(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            templates = {
                r.name: r
                for r in conn.execute(
                    text(
                        "SELECT id, name, market_open, market_close, pre_open_start, pre_open_end "
                        "FROM trading_hours_templates"
                    )
                )
            }
            equity = templates["equity"]
            sessions = conn.execute(
                text(
                    "SELECT day_of_week, market_open, market_close, is_trading_day FROM trading_sessions "
                    "WHERE template_id = :t ORDER BY day_of_week"
                ),
                {"t": equity.id},
            ).all()
            holidays = conn.execute(
                text("SELECT date, market FROM market_holidays WHERE date = :d ORDER BY market"),
                {"d": dt.date(2025, 2, 26)},
            ).all()
            holiday_count = conn.execute(text("SELECT COUNT(*) FROM market_holidays")).scalar_one()
            specials = conn.execute(
                text("SELECT date, market_open, market_close FROM special_trading_sessions ORDER BY date")
            ).all()
    finally:
        engine.dispose()

    assert set(templates) == {"equity", "commodity", "currency"}
    assert _t(equity.market_open) == dt.time(9, 15)
    assert _t(equity.market_close) == dt.time(15, 30)
    assert (_t(equity.pre_open_start), _t(equity.pre_open_end)) == (dt.time(9, 0), dt.time(9, 8))
    assert _t(templates["commodity"].market_close) == dt.time(23, 30)
    assert _t(templates["currency"].market_close) == dt.time(17, 0)

    assert [s.day_of_week for s in sessions] == list(range(7))
    assert [bool(s.is_trading_day) for s in sessions] == [True] * 5 + [False] * 2
    assert {(_t(s.market_open), _t(s.market_close)) for s in sessions[:5]} == {
        (dt.time(9, 15), dt.time(15, 30))
    }

    assert [h.market for h in holidays] == ["BFO", "BSE", "NFO", "NSE"]
    # 14 NSE holidays in 2025 + 15 in 2026, each for NSE, BSE, NFO, BFO.
    assert holiday_count == (14 + 15) * 4

    assert [(_d(s.date), _t(s.market_open), _t(s.market_close)) for s in specials] == [
        (dt.date(2024, 11, 1), dt.time(18, 0), dt.time(19, 0)),
        (dt.date(2025, 10, 21), dt.time(13, 45), dt.time(14, 45)),
    ]


def _t(value: object) -> dt.time:
    """Raw SQL on SQLite returns TIME as text."""
    if isinstance(value, dt.time):
        return value
    return dt.time.fromisoformat(str(value))


def _d(value: object) -> dt.date:
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


SEED_NAMED_INDEXES = {
    ("trading_accounts", "idx_is_primary"),
    ("trading_accounts", "idx_is_active"),
    ("trading_accounts", "idx_accounts_user_primary"),
    ("trading_accounts", "uq_trading_accounts_one_primary"),
    ("orders", "idx_orders_account_status"),
    ("positions", "idx_positions_account_symbol"),
    ("activity_logs", "idx_user_timestamp"),
    ("activity_logs", "idx_action_timestamp"),
    ("activity_logs", "idx_activity_user_action"),
    ("strategy_executions", "idx_strategy_execution_status"),
    ("strategy_executions", "idx_strategy_execution_active"),
    ("risk_events", "idx_risk_event_execution"),
    ("risk_events", "idx_risk_event_type_time"),
    ("websocket_sessions", "idx_ws_session_active"),
    ("websocket_sessions", "idx_ws_session_user"),
    ("market_holidays", "idx_holiday_date"),
    ("special_trading_sessions", "idx_special_session_date"),
    ("strategy_runs", "uq_strategy_runs_one_open"),
}


def test_indexes_when_migrated_include_the_seed_names(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        insp = inspect(engine)
        present = {
            (table, ix["name"])
            for table in {t for t, _ in SEED_NAMED_INDEXES}
            for ix in insp.get_indexes(table)
        }
        uniques = {
            (table, uq["name"])
            for table in ("positions", "holdings")
            for uq in insp.get_unique_constraints(table)
        }
        account_indexes = {ix["name"]: ix for ix in insp.get_indexes("trading_accounts")}
    finally:
        engine.dispose()
    assert present >= SEED_NAMED_INDEXES
    assert {("positions", "unique_position"), ("holdings", "unique_holding")} <= uniques
    # The seed's unique account name holds among live accounts: a partial unique index since issue 8.
    assert account_indexes["unique_user_account"]["unique"]
