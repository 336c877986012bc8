"""Trading accounts (seed table ``trading_accounts``): one OpenAlgo server per account."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from algomirror.db.base import Base, TimestampMixin
from algomirror.db.types import Money, UTCDateTime, money_default

if TYPE_CHECKING:
    from algomirror.db.models.users import User

CONNECTION_STATUSES = ("connected", "disconnected", "failed", "error", "auth_failed")


class TradingAccount(TimestampMixin, Base):
    __tablename__ = "trading_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    account_name: Mapped[str] = mapped_column(String(100), nullable=False)
    broker: Mapped[str] = mapped_column(String(50), nullable=False)
    # Fernet token of the OpenAlgo API key; never rendered, never logged.
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    # Last 4 characters of the key, for display ("••••abcd").
    api_key_last4: Mapped[str | None] = mapped_column(String(4))
    host_url: Mapped[str] = mapped_column(
        String(200), default="http://127.0.0.1:5000", server_default="http://127.0.0.1:5000", nullable=False
    )
    websocket_url: Mapped[str] = mapped_column(
        String(200), default="ws://127.0.0.1:8765", server_default="ws://127.0.0.1:8765", nullable=False
    )
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)
    last_connected: Mapped[datetime | None] = mapped_column(UTCDateTime())
    connection_status: Mapped[str] = mapped_column(
        String(20), default="disconnected", server_default="disconnected", nullable=False
    )
    # Ours: the last error text and when it happened; consecutive failures drive failed/error.
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    # Ours: last successful background sync of funds/books.
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Ours (PRODUCT §2, §9.3): broker includes collateral in availablecash; custom allocation
    # multiplier; cap of lots per leg.
    collateral_included: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), nullable=False
    )
    allocation_multiplier: Mapped[Decimal] = mapped_column(
        Money(8, 2), default=Decimal("1.00"), server_default=money_default("1.00"), nullable=False
    )
    max_lots_per_leg: Mapped[int] = mapped_column(Integer, default=100, server_default="100", nullable=False)
    # Set instead of deleting an account that traded: hidden and inactive, its books and journal kept.
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by reconciliation (or an operator) when the account's broker state cannot be explained: no new
    # entry on this account until a person clears it. Exits go on.
    entries_halted_reason: Mapped[str | None] = mapped_column(Text)
    entries_halted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last good positionbook read (an empty book stores no positions row, so only this tells
    # "flat, just read" from "never read").
    positions_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Kill switch (PRODUCT §6.10, issue 12): the day's loss (₹, realised + unrealised of AlgoMirror's
    # executions on this account, IST day) at or beyond which the engine exits everything on the account
    # and halts its entries. NULL = no limit. ``kill_switch_at``/``kill_switch_reason`` latch the trip (or a
    # person's manual kill) until a person resets it; they survive restarts.
    daily_loss_limit: Mapped[Decimal | None] = mapped_column(Money())
    kill_switch_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    kill_switch_reason: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship(back_populates="trading_accounts")

    __table_args__ = (
        # Names are unique among a user's live accounts; an archived account frees its name.
        Index(
            "unique_user_account",
            "user_id",
            "account_name",
            unique=True,
            postgresql_where=text("archived_at IS NULL"),
            sqlite_where=text("archived_at IS NULL"),
        ),
        CheckConstraint("length(account_name) >= 3", name="check_account_name_length"),
        CheckConstraint("length(broker) >= 1", name="check_broker_not_empty"),
        CheckConstraint(
            "connection_status IN ('connected', 'disconnected', 'failed', 'error', 'auth_failed')",
            name="check_connection_status",
        ),
        CheckConstraint("allocation_multiplier > 0", name="check_allocation_multiplier"),
        CheckConstraint(
            "daily_loss_limit IS NULL OR daily_loss_limit > 0", name="check_daily_loss_limit_positive"
        ),
        CheckConstraint("max_lots_per_leg >= 1", name="check_max_lots_per_leg"),
        Index("idx_is_primary", "is_primary"),
        Index("idx_is_active", "is_active"),
        # Seed covering index; INCLUDE exists only on PostgreSQL (a plain composite index on SQLite).
        Index(
            "idx_accounts_user_primary",
            "user_id",
            "is_primary",
            postgresql_include=["account_name", "broker"],
        ),
        # Exactly one primary per user: the database refuses a second one.
        Index(
            "uq_trading_accounts_one_primary",
            "user_id",
            unique=True,
            postgresql_where=text("is_primary"),
            sqlite_where=text("is_primary = 1"),
        ),
    )
