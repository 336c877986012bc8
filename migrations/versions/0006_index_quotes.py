"""The header's index strip (issue 10): ``index_quotes``.

One row per (account, exchange, symbol): the last NIFTY, BANKNIFTY and SENSEX quote the engine's sync
read through a user's primary account, for the web to show without calling a broker. A cache, so the
rows are deleted with their account (ON DELETE CASCADE). ``ltp`` and ``prev_close`` are prices
(NUMERIC(16,4); integer 1/10,000 units on SQLite, like every money column since 0002).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import Money, UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "index_quotes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("exchange", sa.String(length=20), nullable=False),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("ltp", Money(precision=16, scale=4), nullable=False),
        sa.Column("prev_close", Money(precision=16, scale=4), nullable=True),
        sa.Column("quoted_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_index_quotes_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_quotes")),
        sa.UniqueConstraint(
            "account_id", "exchange", "symbol", name=op.f("uq_index_quotes_account_id_exchange_symbol")
        ),
    )


def downgrade() -> None:
    op.drop_table("index_quotes")
