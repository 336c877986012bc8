"""Users, their server-side sign-in sessions and the activity log (``users``, ``user_sessions``,
``activity_logs``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, false, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from algomirror.db.base import Base, TimestampMixin
from algomirror.db.types import UTCDateTime
from algomirror.domain.timeutil import utcnow

if TYPE_CHECKING:
    from algomirror.db.models.accounts import TradingAccount


class User(TimestampMixin, Base):
    """A person who signs in. ``username`` and ``email`` are stored lower-case, so uniqueness is
    case-insensitive on every backend."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True, nullable=False, index=True)
    email: Mapped[str] = mapped_column(String(120), unique=True, nullable=False, index=True)
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)
    last_login: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Bumped on password change: sessions carrying an older value are ended.
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1", nullable=False)

    trading_accounts: Mapped[list[TradingAccount]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint("length(username) >= 3", name="username_length"),
        CheckConstraint("username = lower(username)", name="username_lower"),
        CheckConstraint("email = lower(email)", name="email_lower"),
    )


class ActivityLog(Base):
    """Audit trail: auth events, account/settings changes, connection events, trading actions."""

    __tablename__ = "activity_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    details: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(200))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)

    __table_args__ = (
        Index("idx_user_timestamp", "user_id", "timestamp"),
        Index("idx_action_timestamp", "action", "timestamp"),
        Index("idx_activity_user_action", "user_id", "action"),
        # The sign-in throttle per source address counts an address's recent failures through it.
        Index("idx_activity_ip_action_timestamp", "ip_address", "action", "timestamp"),
    )


class UserSession(Base):
    """One signed-in browser: the signed session cookie (and the remember-me cookie) carry a random
    token whose SHA-256 is ``key_hash``; a request is signed in only while its row exists and has not
    expired. Deleting the row (sign-out, password change, deactivation, "sign out everywhere") ends the
    session at once. ``last_seen_at`` is refreshed at most about once a minute."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True, index=True)
    # Signed in with "Remember me": the session outlives the idle limit (never the absolute one).
    remember: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(200))
