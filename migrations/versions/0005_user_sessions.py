"""Server-side sign-in sessions and a sign-in throttle per address (issue 9).

* ``user_sessions``: one row per signed-in browser. The signed session cookie and the remember-me cookie
  carry a random token whose SHA-256 is ``key_hash``; a request is signed in only while the row exists
  and has not expired, so sign-out, a password change, deactivation and an administrator's "sign out
  everywhere" end a session at once by deleting its row.
* ``idx_activity_ip_action_timestamp`` on ``activity_logs``: the throttle counts one address's recent
  failed sign-ins (across every username) through it.

Sessions signed in before this revision carry no token and are signed out once.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from algomirror.db.types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("remember", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
    )
    op.create_index(op.f("ix_user_sessions_key_hash"), "user_sessions", ["key_hash"], unique=True)
    op.create_index(op.f("ix_user_sessions_user_id"), "user_sessions", ["user_id"], unique=False)
    op.create_index(
        "idx_activity_ip_action_timestamp",
        "activity_logs",
        ["ip_address", "action", "timestamp"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("idx_activity_ip_action_timestamp", table_name="activity_logs")
    op.drop_index(op.f("ix_user_sessions_user_id"), table_name="user_sessions")
    op.drop_index(op.f("ix_user_sessions_key_hash"), table_name="user_sessions")
    op.drop_table("user_sessions")
