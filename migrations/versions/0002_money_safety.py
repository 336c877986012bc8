"""Make the base safe for money (issue 8): fencing epoch, an indestructible journal, exact numbers.

* ``engine_fence``: the engine's fencing epoch (one row).
* Journal and execution rows can no longer be removed by deleting a parent: every foreign key into and
  out of ``order_intents``, ``strategy_executions``, ``strategy_runs`` and ``risk_events`` is RESTRICT.
* ``strategy_executions.run_id`` is NOT NULL and (run_id, leg_id, account_id) unique; ``order_intents``
  (account_id, order_id) unique.
* ``archived_at`` on accounts and strategies; their names are unique among the live ones only.
* Prices and averages NUMERIC(16,4) (were rounded to 2 decimals); on SQLite every money value becomes an
  integer count of 1/10,000 rupee (its NUMERIC affinity stored binary floats), and the money server
  defaults and CHECKs are rendered in those units.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import Money, MoneyLiteral, UTCDateTime, money_default

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_FACTOR = 10_000

MONEY_COLUMNS: dict[str, list[str]] = {
    "account_funds": ["available_cash", "collateral", "m2m_realized", "m2m_unrealized", "utilised_debits"],
    "holdings": ["average_price", "current_price", "pnl", "pnl_percent", "invested_value", "current_value"],
    "margin_requirements": [
        "ce_pe_sell_expiry",
        "ce_pe_sell_non_expiry",
        "ce_and_pe_sell_expiry",
        "ce_and_pe_sell_non_expiry",
        "futures_expiry",
        "futures_non_expiry",
        "sensex_ce_pe_sell_expiry",
        "sensex_ce_pe_sell_non_expiry",
        "sensex_ce_and_pe_sell_expiry",
        "sensex_ce_and_pe_sell_non_expiry",
        "sensex_futures_expiry",
        "sensex_futures_non_expiry",
        "buying_premium_per_lot",
    ],
    "margin_trackers": [
        "total_available_margin",
        "used_margin",
        "free_margin",
        "span_margin",
        "exposure_margin",
        "option_premium",
    ],
    "order_intents": ["price", "trigger_price", "average_price"],
    "orders": ["price", "trigger_price", "average_price"],
    "orders_archive": ["price", "trigger_price", "average_price"],
    "positions": [
        "average_price",
        "current_price",
        "ltp",
        "pnl",
        "pnl_percent",
        "realized_pnl",
        "unrealized_pnl",
        "day_change",
        "day_change_percent",
    ],
    "risk_events": ["trigger_value", "threshold_value"],
    "strategies": ["max_loss", "max_profit", "trailing_sl", "supertrend_multiplier"],
    "strategy_executions": [
        "entry_price",
        "exit_price",
        "realized_pnl",
        "unrealized_pnl",
        "brokerage",
        "max_loss_amount",
        "max_profit_amount",
        "trailing_sl_amount",
        "peak_pnl",
        "last_price",
        "stop_loss_price",
        "take_profit_price",
        "trailing_best_price",
        "sl_hit_price",
        "tp_hit_price",
    ],
    "strategy_legs": [
        "strike_price",
        "premium_value",
        "limit_price",
        "trigger_price",
        "stop_loss_value",
        "take_profit_value",
        "trailing_value",
    ],
    "strategy_runs": [
        "base_premium",
        "trailing_initial_stop",
        "peak_pnl",
        "trailing_stop_level",
        "max_loss_value",
        "max_profit_value",
        "trailing_value",
        "supertrend_value",
        "final_pnl",
    ],
    "trade_qualities": ["margin_percentage"],
    "trades": ["average_price", "trade_value"],
    "trading_accounts": ["allocation_multiplier"],
}

# NUMERIC(14,2) -> NUMERIC(16,4).
PRICE_COLUMNS: dict[str, list[str]] = {
    "holdings": ["average_price", "current_price"],
    "order_intents": ["price", "trigger_price", "average_price"],
    "orders": ["price", "trigger_price", "average_price"],
    "orders_archive": ["price", "trigger_price", "average_price"],
    "positions": ["average_price", "current_price", "ltp"],
    "strategy_executions": [
        "entry_price",
        "exit_price",
        "last_price",
        "stop_loss_price",
        "take_profit_price",
        "trailing_best_price",
        "sl_hit_price",
        "tp_hit_price",
    ],
    "strategy_legs": ["premium_value", "limit_price", "trigger_price"],
    "strategy_runs": ["base_premium"],
    "trades": ["average_price"],
}

# (table, column, referred table): CASCADE -> RESTRICT.
RESTRICT_FKS: list[tuple[str, str, str]] = [
    ("strategy_runs", "strategy_id", "strategies"),
    ("strategy_executions", "strategy_id", "strategies"),
    ("strategy_executions", "account_id", "trading_accounts"),
    ("strategy_executions", "leg_id", "strategy_legs"),
    ("strategy_executions", "run_id", "strategy_runs"),
    ("order_intents", "execution_id", "strategy_executions"),
    ("order_intents", "account_id", "trading_accounts"),
    ("risk_events", "strategy_execution_id", "strategy_executions"),
    ("risk_events", "run_id", "strategy_runs"),
]

MONEY_DEFAULTS: dict[str, list[tuple[str, str, int, int]]] = {
    "margin_requirements": [
        ("ce_pe_sell_expiry", "205000.00", 14, 2),
        ("ce_pe_sell_non_expiry", "250000.00", 14, 2),
        ("ce_and_pe_sell_expiry", "250000.00", 14, 2),
        ("ce_and_pe_sell_non_expiry", "320000.00", 14, 2),
        ("futures_expiry", "215000.00", 14, 2),
        ("futures_non_expiry", "215000.00", 14, 2),
        ("sensex_ce_pe_sell_expiry", "180000.00", 14, 2),
        ("sensex_ce_pe_sell_non_expiry", "220000.00", 14, 2),
        ("sensex_ce_and_pe_sell_expiry", "225000.00", 14, 2),
        ("sensex_ce_and_pe_sell_non_expiry", "290000.00", 14, 2),
        ("sensex_futures_expiry", "185000.00", 14, 2),
        ("sensex_futures_non_expiry", "185000.00", 14, 2),
        ("buying_premium_per_lot", "20000.00", 14, 2),
    ],
    "strategies": [("supertrend_multiplier", "3.00", 5, 2)],
    "trading_accounts": [("allocation_multiplier", "1.00", 8, 2)],
}

# Partial unique indexes of the recreated tables, dropped before and rebuilt after a SQLite batch so
# their WHERE clauses survive whatever the reflection keeps.
PARTIAL_UNIQUES: dict[str, list[tuple[str, list[str], str]]] = {
    "trading_accounts": [("uq_trading_accounts_one_primary", ["user_id"], "is_primary")],
    "strategy_runs": [("uq_strategy_runs_one_open", ["strategy_id"], "ended_at IS NULL")],
}


def _fk_name(table: str, column: str, referred: str) -> str:
    return f"fk_{table}_{column}_{referred}"


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _where(clause: str, sqlite: bool) -> sa.TextClause:
    if clause == "is_primary":
        return sa.text("is_primary = 1" if sqlite else "is_primary")
    return sa.text(clause)


def _drop_partials(table: str) -> None:
    for name, _cols, _where_sql in PARTIAL_UNIQUES.get(table, []):
        op.drop_index(name, table_name=table)


def _create_partials(table: str) -> None:
    sqlite = _is_sqlite()
    for name, cols, where in PARTIAL_UNIQUES.get(table, []):
        clause = _where(where, sqlite)
        op.create_index(name, table, cols, unique=True, sqlite_where=clause, postgresql_where=clause)


def _check_no_duplicates() -> None:
    """The new unique keys must hold for existing rows; name the offending ones instead of failing on a
    raw constraint error."""
    checks = {
        "strategy_executions (run_id, leg_id, account_id)": (
            "SELECT run_id, leg_id, account_id FROM strategy_executions"
            " GROUP BY run_id, leg_id, account_id HAVING COUNT(*) > 1"
        ),
        "order_intents (account_id, order_id)": (
            "SELECT account_id, order_id FROM order_intents WHERE order_id IS NOT NULL"
            " GROUP BY account_id, order_id HAVING COUNT(*) > 1"
        ),
    }
    for what, query in checks.items():
        rows = op.get_bind().execute(sa.text(query)).fetchall()
        if rows:
            raise RuntimeError(
                f"duplicate rows in {what}: {[tuple(r) for r in rows[:5]]}; each is a second real order "
                "for the same slot and must be resolved by hand before upgrading"
            )


def _check_no_orphan_executions() -> None:
    orphans = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM strategy_executions WHERE run_id IS NULL"))
    if orphans.scalar_one():
        raise RuntimeError(
            "strategy_executions rows without a run exist; attach them to a strategy_runs row before "
            "upgrading (no released version creates such rows)"
        )


def _alter_table(table: str, *, to_restrict: bool, upgrade: bool) -> None:
    """Every change of one table, in one batch (one table rebuild on SQLite)."""
    sqlite = _is_sqlite()
    prices = PRICE_COLUMNS.get(table, [])
    fks = [fk for fk in RESTRICT_FKS if fk[0] == table]
    defaults = MONEY_DEFAULTS.get(table, []) if sqlite else []
    check = table == "trade_qualities" and sqlite
    extra = table in ("trading_accounts", "strategies", "strategy_executions", "order_intents")
    if not (prices or fks or defaults or check or extra):
        return
    _drop_partials(table)
    with op.batch_alter_table(table, recreate="always" if sqlite else "auto") as batch:
        for column in prices:
            new, old = (Money(16, 4), Money(14, 2)) if upgrade else (Money(14, 2), Money(16, 4))
            batch.alter_column(column, type_=new, existing_type=old, existing_nullable=True)
        for _table, column, referred in fks:
            name = _fk_name(table, column, referred)
            batch.drop_constraint(name, type_="foreignkey")
            batch.create_foreign_key(
                name, referred, [column], ["id"], ondelete="RESTRICT" if to_restrict else "CASCADE"
            )
        for column, value, precision, scale in defaults:
            batch.alter_column(
                column,
                server_default=money_default(value) if upgrade else value,
                existing_type=Money(precision, scale),
                existing_nullable=False,
            )
        if check:
            batch.drop_constraint(op.f("ck_trade_qualities_margin_percentage_range"), type_="check")
            upgraded = sa.and_(
                sa.column("margin_percentage") > 0, sa.column("margin_percentage") <= MoneyLiteral(100)
            )
            batch.create_check_constraint(
                op.f("ck_trade_qualities_margin_percentage_range"),
                upgraded if upgrade else sa.text("margin_percentage > 0 AND margin_percentage <= 100"),
            )
        if table in ("trading_accounts", "strategies"):
            _alter_archivable(batch, table, upgrade=upgrade)
        if table == "strategy_executions":
            if upgrade:
                batch.alter_column("run_id", existing_type=sa.Integer(), nullable=False)
                batch.create_unique_constraint(
                    "uq_strategy_executions_run_leg_account", ["run_id", "leg_id", "account_id"]
                )
            else:
                batch.drop_constraint("uq_strategy_executions_run_leg_account", type_="unique")
                batch.alter_column("run_id", existing_type=sa.Integer(), nullable=True)
        if table == "order_intents":
            if upgrade:
                batch.create_unique_constraint("uq_order_intents_account_order", ["account_id", "order_id"])
            else:
                batch.drop_constraint("uq_order_intents_account_order", type_="unique")
    _create_partials(table)


def _alter_archivable(batch: Any, table: str, *, upgrade: bool) -> None:
    name_col = "account_name" if table == "trading_accounts" else "name"
    unique = "unique_user_account" if table == "trading_accounts" else "uq_strategies_user_id_name"
    if upgrade:
        batch.add_column(sa.Column("archived_at", UTCDateTime(), nullable=True))
        batch.drop_constraint(unique, type_="unique")
    else:
        batch.drop_column("archived_at")
        batch.create_unique_constraint(unique, ["user_id", name_col])


def _create_name_indexes() -> None:
    for table, name, col in (
        ("trading_accounts", "unique_user_account", "account_name"),
        ("strategies", "uq_strategies_user_id_name", "name"),
    ):
        clause = sa.text("archived_at IS NULL")
        op.create_index(
            name, table, ["user_id", col], unique=True, sqlite_where=clause, postgresql_where=clause
        )


def _drop_name_indexes() -> None:
    op.drop_index("unique_user_account", table_name="trading_accounts")
    op.drop_index("uq_strategies_user_id_name", table_name="strategies")


def _scale_sqlite_money(*, to_units: bool) -> None:
    for table, columns in MONEY_COLUMNS.items():
        sets = ", ".join(
            f"{c} = CAST(ROUND({c} * {SQLITE_FACTOR}) AS INTEGER)"
            if to_units
            else f"{c} = {c} / {SQLITE_FACTOR}.0"
            for c in columns
        )
        op.execute(f"UPDATE {table} SET {sets}")  # noqa: S608 - literal table and column names


def upgrade() -> None:
    op.create_table(
        "engine_fence",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("acquired_at", UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_engine_fence_single_row")),
        sa.CheckConstraint("epoch >= 0", name=op.f("ck_engine_fence_epoch_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engine_fence")),
    )
    op.execute("INSERT INTO engine_fence (id, epoch) VALUES (1, 0)")
    _check_no_orphan_executions()
    _check_no_duplicates()
    for table in MONEY_COLUMNS:
        _alter_table(table, to_restrict=True, upgrade=True)
    _create_name_indexes()
    if _is_sqlite():
        _scale_sqlite_money(to_units=True)


def downgrade() -> None:
    if _is_sqlite():
        _scale_sqlite_money(to_units=False)
    _drop_name_indexes()
    for table in MONEY_COLUMNS:
        _alter_table(table, to_restrict=False, upgrade=False)
    op.drop_table("engine_fence")
