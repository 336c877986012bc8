"""Market-data feed bookkeeping: option-chain viewing sessions, WebSocket connections, failovers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column

from algomirror.db.base import Base
from algomirror.db.models.enums import WS_CONNECTION_STATUSES, WS_SESSION_TYPES, in_check
from algomirror.db.types import UTCDateTime
from algomirror.domain.timeutil import utcnow


class WebSocketSession(Base):
    """A browser viewing an option chain (or position monitor); expires 5 min after the last heartbeat."""

    __tablename__ = "websocket_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("trading_accounts.id", ondelete="SET NULL"))
    session_type: Mapped[str | None] = mapped_column(String(50))
    instrument: Mapped[str | None] = mapped_column(String(50))
    # Option chain: the expiry viewed (ISO date) and the strikes each side of ATM (issue 12).
    expiry: Mapped[str | None] = mapped_column(String(20))
    strike_count: Mapped[int | None] = mapped_column(Integer)
    symbol_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("idx_ws_session_active", "is_active", "expires_at"),
        Index("idx_ws_session_user", "user_id", "is_active"),
        in_check("session_type", WS_SESSION_TYPES),
    )


class WebSocketConnection(Base):
    """One market-data WebSocket connection to an account's OpenAlgo server."""

    __tablename__ = "websocket_connections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    connection_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(
        String(20), default="disconnected", server_default="disconnected", nullable=False, index=True
    )
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    messages_received: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (in_check("status", WS_CONNECTION_STATUSES),)


class FailoverEvent(Base):
    """The feed moved from one account to another (or back to the primary)."""

    __tablename__ = "failover_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    from_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="SET NULL")
    )
    to_account_id: Mapped[int | None] = mapped_column(ForeignKey("trading_accounts.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(String(100))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)
    success: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text)
