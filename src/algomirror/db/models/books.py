"""Per-account broker books kept by the engine's sync: funds, orders and trades (+ archives), positions,
holdings, and the margin tracker.

Every table has a natural key that matches what the broker returns, enforced by a unique constraint, so
sync can upsert (``INSERT … ON CONFLICT … DO UPDATE`` or select-then-update) instead of duplicating rows.
Numbers the broker did not give (empty, null, unparseable) are stored as NULL: unknown, never 0.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from algomirror.db.base import Base, TimestampMixin
from algomirror.db.models.enums import ACTIONS, ORDER_STATUSES, ORDER_TYPES, PRODUCTS, in_check
from algomirror.db.types import Money, Price, UTCDateTime
from algomirror.domain.timeutil import utcnow


def make_trade_key(trade_id: str | None, ordinal: int) -> str:
    """The ``trades.trade_key`` of a tradebook row.

    ``trade_id`` is the broker's trade id when it gives one (used as is); otherwise the key is ``#<n>``,
    ``ordinal`` being the 1-based position of the row among the rows of the same order in the book, so
    a re-read of the same book maps every row to the same key. Raises ValueError for ordinal < 1.
    """
    if trade_id:
        return trade_id
    if ordinal < 1:
        raise ValueError("ordinal is 1-based")
    return f"#{ordinal}"


class AccountFunds(TimestampMixin, Base):
    """Last good ``funds`` reply of an account (one row per account, replaced on each sync)."""

    __tablename__ = "account_funds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    available_cash: Mapped[Decimal | None] = mapped_column(Money())
    collateral: Mapped[Decimal | None] = mapped_column(Money())
    m2m_realized: Mapped[Decimal | None] = mapped_column(Money())
    m2m_unrealized: Mapped[Decimal | None] = mapped_column(Money())
    utilised_debits: Mapped[Decimal | None] = mapped_column(Money())
    # The reply's ``data`` object as received (strings kept as strings), for support and new fields.
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class _OrderColumns:
    """Columns shared by ``orders`` and ``orders_archive`` (seed columns + what sync needs)."""

    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Broker order id (OpenAlgo ``orderid``, always a string).
    order_id: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    symbol: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    exchange: Mapped[str] = mapped_column(String(10), nullable=False)
    action: Mapped[str] = mapped_column(String(10), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    # OpenAlgo ``pricetype``.
    order_type: Mapped[str] = mapped_column(String(20), nullable=False)
    price: Mapped[Decimal | None] = mapped_column(Price())
    trigger_price: Mapped[Decimal | None] = mapped_column(Price())
    product: Mapped[str | None] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    filled_quantity: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    pending_quantity: Mapped[int | None] = mapped_column(Integer)
    average_price: Mapped[Decimal | None] = mapped_column(Price())
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    # OpenAlgo ``strategy`` tag; ours are derived from the strategy id (PRODUCT §5.9).
    strategy: Mapped[str | None] = mapped_column(String(100))
    # Broker timestamp of the order (IST on the wire, stored UTC); fetch time when the broker gave none.
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


def _order_checks() -> tuple[Any, ...]:
    return (
        in_check("action", ACTIONS),
        in_check("order_type", ORDER_TYPES),
        in_check("product", PRODUCTS),
        in_check("status", ORDER_STATUSES),
    )


class Order(_OrderColumns, TimestampMixin, Base):
    """One broker order of an account, as last read from its orderbook (natural key: account, order id)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)

    __table_args__ = (
        UniqueConstraint("account_id", "order_id"),
        Index("idx_orders_account_status", "account_id", "status"),
        # Sync compares an orderbook read with the account's orders of the current IST day only.
        Index("idx_orders_account_placed", "account_id", "placed_at"),
        *_order_checks(),
    )


class OrderArchive(_OrderColumns, TimestampMixin, Base):
    """Orders older than the retention window, moved here by maintenance; ``id`` is the original id."""

    __tablename__ = "orders_archive"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    archived_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = _order_checks()


class _TradeColumns:
    """Columns shared by ``trades`` and ``trades_archive``."""

    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    order_id: Mapped[str] = mapped_column(String(50), nullable=False)
    # Broker trade id when given ([paper] ``tradeid``; most live brokers: none).
    trade_id: Mapped[str | None] = mapped_column(String(100))
    trade_key: Mapped[str] = mapped_column(String(100), nullable=False)
    symbol: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    exchange: Mapped[str] = mapped_column(String(10), nullable=False)
    product: Mapped[str | None] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(10), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    average_price: Mapped[Decimal | None] = mapped_column(Price())
    trade_value: Mapped[Decimal | None] = mapped_column(Money())
    # Live tradebooks may give a time-only stamp: then NULL rather than a guessed date (sync and
    # maintenance then go by ``created_at``, the fetch time the row was first seen).
    traded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    strategy: Mapped[str | None] = mapped_column(String(100))


def _trade_checks() -> tuple[Any, ...]:
    return (in_check("action", ACTIONS), in_check("product", PRODUCTS))


class Trade(_TradeColumns, TimestampMixin, Base):
    """One tradebook row (a fill). Natural key: account, order id, ``trade_key`` (see make_trade_key)."""

    __tablename__ = "trades"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)

    __table_args__ = (
        UniqueConstraint("account_id", "order_id", "trade_key"),
        # Sync compares a tradebook read with the account's rows of the current IST day only.
        Index("idx_trades_account_traded", "account_id", "traded_at"),
        *_trade_checks(),
    )


class TradeArchive(_TradeColumns, TimestampMixin, Base):
    """Trades older than the retention window, moved here by maintenance; ``id`` is the original id."""

    __tablename__ = "trades_archive"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    archived_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = _trade_checks()


class Position(TimestampMixin, Base):
    """One positionbook row; ``quantity`` is signed (short < 0). ``updated_at`` is the fetch time."""

    __tablename__ = "positions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    symbol: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    exchange: Mapped[str] = mapped_column(String(10), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    product: Mapped[str] = mapped_column(String(10), nullable=False)
    average_price: Mapped[Decimal] = mapped_column(Price(), nullable=False)
    current_price: Mapped[Decimal | None] = mapped_column(Price())
    ltp: Mapped[Decimal | None] = mapped_column(Price())
    pnl: Mapped[Decimal | None] = mapped_column(Money())
    pnl_percent: Mapped[Decimal | None] = mapped_column(Money(12, 2))
    realized_pnl: Mapped[Decimal | None] = mapped_column(Money())
    unrealized_pnl: Mapped[Decimal | None] = mapped_column(Money())
    day_change: Mapped[Decimal | None] = mapped_column(Money())
    day_change_percent: Mapped[Decimal | None] = mapped_column(Money(12, 2))

    __table_args__ = (
        # OpenAlgo nets positions by symbol + exchange + product (the seed key lacked the exchange).
        UniqueConstraint("account_id", "symbol", "exchange", "product", name="unique_position"),
        Index("idx_positions_account_symbol", "account_id", "symbol"),
        in_check("product", PRODUCTS),
    )


class Holding(TimestampMixin, Base):
    """One holdings row (delivery stock in the demat account). ``updated_at`` is the fetch time."""

    __tablename__ = "holdings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    symbol: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    exchange: Mapped[str] = mapped_column(String(10), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    average_price: Mapped[Decimal] = mapped_column(Price(), nullable=False)
    current_price: Mapped[Decimal | None] = mapped_column(Price())
    pnl: Mapped[Decimal | None] = mapped_column(Money())
    pnl_percent: Mapped[Decimal | None] = mapped_column(Money(12, 2))
    invested_value: Mapped[Decimal | None] = mapped_column(Money())
    current_value: Mapped[Decimal | None] = mapped_column(Money())

    __table_args__ = (UniqueConstraint("account_id", "symbol", name="unique_holding"),)


class MarginTracker(Base):
    """Per-account margin picture (PRODUCT §9.5): one row per account, updated by sync and sizing.

    ``allocated_margins`` holds the reservations planned runs make (:mod:`algomirror.domain.reservations`),
    e.g. ``{"run:12": {"amount": "320000.00", "reserved_at": "2026-01-05T04:00:00+00:00", "entered_at":
    null}}`` (amounts as strings).
    """

    __tablename__ = "margin_trackers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    total_available_margin: Mapped[Decimal | None] = mapped_column(Money())
    used_margin: Mapped[Decimal | None] = mapped_column(Money())
    free_margin: Mapped[Decimal | None] = mapped_column(Money())
    span_margin: Mapped[Decimal | None] = mapped_column(Money())
    exposure_margin: Mapped[Decimal | None] = mapped_column(Money())
    option_premium: Mapped[Decimal | None] = mapped_column(Money())
    allocated_margins: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_updated: Mapped[datetime | None] = mapped_column(UTCDateTime())
    update_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
