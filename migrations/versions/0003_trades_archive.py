"""Sync reads only today's books (issue 8 item 8): indexes by account and time, and a trades archive.

* ``idx_orders_account_placed`` (account_id, placed_at) and ``idx_trades_account_traded``
  (account_id, traded_at): sync loads an account's rows of the current IST day through them, so its cost
  does not grow with the account's history.
* ``trades_archive``: the columns of ``trades`` plus ``archived_at``; ``id`` is the original trade id.
  Maintenance moves trades older than the retention window there, as it does orders.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import Money, UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("idx_orders_account_placed", "orders", ["account_id", "placed_at"], unique=False)
    op.create_index("idx_trades_account_traded", "trades", ["account_id", "traded_at"], unique=False)

    op.create_table(
        "trades_archive",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("archived_at", UTCDateTime(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=50), nullable=False),
        sa.Column("trade_id", sa.String(length=100), nullable=True),
        sa.Column("trade_key", sa.String(length=100), nullable=False),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("exchange", sa.String(length=10), nullable=False),
        sa.Column("product", sa.String(length=10), nullable=True),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("average_price", Money(precision=16, scale=4), nullable=True),
        sa.Column("trade_value", Money(precision=14, scale=2), nullable=True),
        sa.Column("traded_at", UTCDateTime(), nullable=True),
        sa.Column("strategy", sa.String(length=100), nullable=True),
        sa.Column("updated_at", UTCDateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.CheckConstraint("action IN ('BUY', 'SELL')", name=op.f("ck_trades_archive_action_values")),
        sa.CheckConstraint(
            "product IN ('MIS', 'NRML', 'CNC')", name=op.f("ck_trades_archive_product_values")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_trades_archive_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trades_archive")),
    )
    op.create_index(op.f("ix_trades_archive_account_id"), "trades_archive", ["account_id"], unique=False)
    op.create_index(op.f("ix_trades_archive_symbol"), "trades_archive", ["symbol"], unique=False)
    op.create_index(op.f("ix_trades_archive_traded_at"), "trades_archive", ["traded_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_trades_archive_traded_at"), table_name="trades_archive")
    op.drop_index(op.f("ix_trades_archive_symbol"), table_name="trades_archive")
    op.drop_index(op.f("ix_trades_archive_account_id"), table_name="trades_archive")
    op.drop_table("trades_archive")
    op.drop_index("idx_trades_account_traded", table_name="trades")
    op.drop_index("idx_orders_account_placed", table_name="orders")
