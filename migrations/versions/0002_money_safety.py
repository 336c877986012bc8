"""Make the base safe for money (issue 8): fencing epoch, journal integrity, exact numbers.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


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


def downgrade() -> None:
    op.drop_table("engine_fence")
