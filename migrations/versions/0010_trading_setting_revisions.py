"""Exchange revisions of instrument settings with an effective date (issue 14).

``trading_setting_revisions``: from ``effective_from`` (IST date) a revision's lot size, next-month lot
size, freeze quantity and max lots per order replace its ``trading_settings`` row's; deleted with the row.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_T = "trading_setting_revisions"


def upgrade() -> None:
    op.create_table(
        _T,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("setting_id", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("lot_size", sa.Integer(), nullable=False),
        sa.Column("next_month_lot_size", sa.Integer(), nullable=True),
        sa.Column("freeze_quantity", sa.Integer(), nullable=False),
        sa.Column("max_lots_per_order", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.CheckConstraint("lot_size BETWEEN 1 AND 1000", name=op.f(f"ck_{_T}_revision_lot_size_range")),
        sa.CheckConstraint(
            "next_month_lot_size BETWEEN 1 AND 1000", name=op.f(f"ck_{_T}_revision_next_month_lot_size_range")
        ),
        sa.CheckConstraint(
            "freeze_quantity BETWEEN 1 AND 50000", name=op.f(f"ck_{_T}_revision_freeze_quantity_range")
        ),
        sa.CheckConstraint(
            "freeze_quantity >= lot_size", name=op.f(f"ck_{_T}_revision_freeze_not_below_lot")
        ),
        sa.CheckConstraint("max_lots_per_order >= 1", name=op.f(f"ck_{_T}_revision_max_lots_positive")),
        sa.ForeignKeyConstraint(
            ["setting_id"],
            ["trading_settings.id"],
            name=op.f(f"fk_{_T}_setting_id_trading_settings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_T}")),
        sa.UniqueConstraint("setting_id", "effective_from", name=op.f(f"uq_{_T}_setting_id_effective_from")),
    )
    op.create_index(op.f(f"ix_{_T}_setting_id"), _T, ["setting_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f(f"ix_{_T}_setting_id"), table_name=_T)
    op.drop_table(_T)
