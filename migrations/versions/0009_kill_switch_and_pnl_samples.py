"""Kill switch, option-chain viewing sessions and the MTM curve (issue 12).

* ``trading_accounts.daily_loss_limit`` (₹, > 0 or NULL): the day's loss at which the engine exits
  everything on the account and halts its entries; ``kill_switch_at`` / ``kill_switch_reason`` latch the
  trip (or a person's manual kill) until a person resets it.
* ``websocket_sessions.expiry`` / ``strike_count``: what an option-chain viewer is looking at, so the
  engine can subscribe those strikes while the session lives.
* ``run_pnl_samples``: the run's P&L over the day, sampled by the risk engine, for the MTM chart.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import Money, UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trading_accounts") as batch:
        batch.add_column(sa.Column("daily_loss_limit", Money(), nullable=True))
        batch.add_column(sa.Column("kill_switch_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("kill_switch_reason", sa.Text(), nullable=True))
        batch.create_check_constraint(
            "check_daily_loss_limit_positive", "daily_loss_limit IS NULL OR daily_loss_limit > 0"
        )
    with op.batch_alter_table("websocket_sessions") as batch:
        batch.add_column(sa.Column("expiry", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("strike_count", sa.Integer(), nullable=True))
    op.create_table(
        "run_pnl_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("pnl", Money(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["strategy_runs.id"],
            name=op.f("fk_run_pnl_samples_run_id_strategy_runs"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_pnl_samples")),
        sa.UniqueConstraint("run_id", "at", name="uq_run_pnl_samples_run_at"),
    )


def downgrade() -> None:
    op.drop_table("run_pnl_samples")
    with op.batch_alter_table("websocket_sessions") as batch:
        batch.drop_column("strike_count")
        batch.drop_column("expiry")
    with op.batch_alter_table("trading_accounts") as batch:
        batch.drop_constraint("check_daily_loss_limit_positive", type_="check")
        batch.drop_column("kill_switch_reason")
        batch.drop_column("kill_switch_at")
        batch.drop_column("daily_loss_limit")
