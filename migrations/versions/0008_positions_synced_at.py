"""``trading_accounts.positions_synced_at``: when the engine last read the account's positionbook.

An empty positionbook stores no ``positions`` row, so the rows' own times cannot tell "flat, read just
now" from "never read": the mirror check needs the read's time to call a missing leg missing rather than
unknown. Set by the sync on every good positionbook read (a refused or failed read leaves it).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("trading_accounts", sa.Column("positions_synced_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trading_accounts") as batch:
        batch.drop_column("positions_synced_at")
