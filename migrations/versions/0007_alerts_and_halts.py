"""Alerts, per-account entry halts, the ``exit_all`` reason and accepted mirror drifts (issue 11).

* ``engine_alerts``: what a person must see and acknowledge (reconciliation, failed exits, kept legs).
* ``trading_accounts.entries_halted_reason`` / ``entries_halted_at``: reconciliation halts new entries on
  one account until a person clears it.
* ``exit_all`` joins the exit reasons of ``strategy_executions`` and ``strategy_runs`` (the CHECKs are
  rebuilt; one table rebuild each on SQLite).
* ``mirror_acceptances``: drifts the mirror check was told to accept.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RISK_TYPES = (
    "max_loss",
    "max_profit",
    "trailing_stop",
    "supertrend_exit",
    "stop_loss",
    "take_profit",
    "leg_trailing_stop",
    "time_exit",
    "square_off",
    "kill_switch",
)
# Frozen copies: a migration must not change when the models' tuples do.
_REASONS_0006 = (*_RISK_TYPES, "manual", "entry_unwind", "manual_cancel", "webhook", "closed_externally")
_REASONS_0007 = (*_REASONS_0006, "exit_all")
_OPEN_RUN_INDEX = "uq_strategy_runs_one_open"


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _reason_check(values: tuple[str, ...]) -> str:
    return "exit_reason IN ({})".format(", ".join(f"'{v}'" for v in values))


def _rebuild_reason_checks(values: tuple[str, ...]) -> None:
    sqlite = _is_sqlite()
    # SQLite's table rebuild would drop the partial predicate of the one-open-run index: recreate it.
    op.drop_index(_OPEN_RUN_INDEX, table_name="strategy_runs")
    for table in ("strategy_executions", "strategy_runs"):
        with op.batch_alter_table(table, recreate="always" if sqlite else "auto") as batch:
            batch.drop_constraint(op.f(f"ck_{table}_exit_reason_values"), type_="check")
            batch.create_check_constraint(op.f(f"ck_{table}_exit_reason_values"), _reason_check(values))
    clause = sa.text("ended_at IS NULL")
    op.create_index(
        _OPEN_RUN_INDEX,
        "strategy_runs",
        ["strategy_id"],
        unique=True,
        sqlite_where=clause,
        postgresql_where=clause,
    )


def upgrade() -> None:
    op.create_table(
        "engine_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("execution_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("severity", sa.String(length=10), server_default="warning", nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'critical')", name=op.f("ck_engine_alerts_severity_values")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_engine_alerts_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_engine_alerts_account_id_trading_accounts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["strategy_runs.id"],
            name=op.f("fk_engine_alerts_run_id_strategy_runs"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["strategy_executions.id"],
            name=op.f("fk_engine_alerts_execution_id_strategy_executions"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["acknowledged_by"],
            ["users.id"],
            name=op.f("fk_engine_alerts_acknowledged_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engine_alerts")),
    )
    op.create_index("idx_engine_alerts_user_open", "engine_alerts", ["user_id", "acknowledged_at"])
    op.create_table(
        "mirror_acceptances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=100), nullable=False),
        sa.Column("exchange", sa.String(length=20), nullable=False),
        sa.Column("product", sa.String(length=10), nullable=False),
        sa.Column("broker_quantity", sa.Integer(), nullable=False),
        sa.Column("intended_quantity", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("accepted_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mirror_acceptances_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["strategy_runs.id"],
            name=op.f("fk_mirror_acceptances_run_id_strategy_runs"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_mirror_acceptances_account_id_trading_accounts"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_acceptances")),
    )
    op.create_index("idx_mirror_acceptances_run_account", "mirror_acceptances", ["run_id", "account_id"])
    op.add_column("trading_accounts", sa.Column("entries_halted_reason", sa.Text(), nullable=True))
    op.add_column("trading_accounts", sa.Column("entries_halted_at", UTCDateTime(), nullable=True))
    _rebuild_reason_checks(_REASONS_0007)


def downgrade() -> None:
    for table in ("strategy_executions", "strategy_runs"):
        rows = sa.table(table, sa.column("exit_reason"))
        op.execute(rows.update().where(rows.c.exit_reason == "exit_all").values(exit_reason="manual"))
    _rebuild_reason_checks(_REASONS_0006)
    with op.batch_alter_table("trading_accounts") as batch:
        batch.drop_column("entries_halted_at")
        batch.drop_column("entries_halted_reason")
    op.drop_index("idx_mirror_acceptances_run_account", table_name="mirror_acceptances")
    op.drop_table("mirror_acceptances")
    op.drop_index("idx_engine_alerts_user_open", table_name="engine_alerts")
    op.drop_table("engine_alerts")
