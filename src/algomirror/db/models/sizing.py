"""Per-user sizing data: margin per lot, trade-quality grades, instrument settings (PRODUCT §9, §10).

Rows are created for each new user by :func:`algomirror.db.defaults.seed_user_defaults`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    column,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from algomirror.db.base import Base, CreatedAtMixin, TimestampMixin
from algomirror.db.models.enums import GRADE_SOURCES, RISK_LEVELS, in_check
from algomirror.db.types import Money, MoneyLiteral, money_default


def _margin(default: str) -> Mapped[Decimal]:
    return mapped_column(
        Money(), default=Decimal(default), server_default=money_default(default), nullable=False
    )


class MarginRequirement(TimestampMixin, Base):
    """Margin per lot in rupees for one instrument of one user (sizing knobs, not exchange figures).

    Sizing reads the generic columns of the row whose ``instrument`` matches; the ``sensex_*`` columns are
    the seed's legacy copy of the SENSEX figures and are not read by sizing.
    """

    __tablename__ = "margin_requirements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    instrument: Mapped[str] = mapped_column(String(50), nullable=False)

    ce_pe_sell_expiry: Mapped[Decimal] = _margin("205000.00")
    ce_pe_sell_non_expiry: Mapped[Decimal] = _margin("250000.00")
    ce_and_pe_sell_expiry: Mapped[Decimal] = _margin("250000.00")
    ce_and_pe_sell_non_expiry: Mapped[Decimal] = _margin("320000.00")
    futures_expiry: Mapped[Decimal] = _margin("215000.00")
    futures_non_expiry: Mapped[Decimal] = _margin("215000.00")

    sensex_ce_pe_sell_expiry: Mapped[Decimal] = _margin("180000.00")
    sensex_ce_pe_sell_non_expiry: Mapped[Decimal] = _margin("220000.00")
    sensex_ce_and_pe_sell_expiry: Mapped[Decimal] = _margin("225000.00")
    sensex_ce_and_pe_sell_non_expiry: Mapped[Decimal] = _margin("290000.00")
    sensex_futures_expiry: Mapped[Decimal] = _margin("185000.00")
    sensex_futures_non_expiry: Mapped[Decimal] = _margin("185000.00")

    # Ours: option-buying budget per lot for cash (buyer) grades, per instrument.
    buying_premium_per_lot: Mapped[Decimal] = _margin("20000.00")

    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)

    __table_args__ = (
        UniqueConstraint("user_id", "instrument"),
        CheckConstraint(
            "ce_pe_sell_expiry > 0 AND ce_pe_sell_non_expiry > 0 AND ce_and_pe_sell_expiry > 0"
            " AND ce_and_pe_sell_non_expiry > 0 AND futures_expiry > 0 AND futures_non_expiry > 0"
            " AND buying_premium_per_lot > 0",
            name="margins_positive",
        ),
    )


class TradeQuality(TimestampMixin, Base):
    """A grade: share of the margin base to deploy. ``source`` = ``available`` (seller base) or ``cash``
    (buyer base). System grades A/B/C (``is_system``) are editable but not deletable."""

    __tablename__ = "trade_qualities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    quality_grade: Mapped[str] = mapped_column(String(20), nullable=False)
    # Percent, 0–100.
    margin_percentage: Mapped[Decimal] = mapped_column(Money(5, 2), nullable=False)
    risk_level: Mapped[str | None] = mapped_column(String(20))
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(
        String(10), default="available", server_default="available", nullable=False
    )
    is_system: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)

    __table_args__ = (
        UniqueConstraint("user_id", "quality_grade"),
        CheckConstraint(
            and_(column("margin_percentage") > 0, column("margin_percentage") <= MoneyLiteral(100)),
            name="margin_percentage_range",
        ),
        CheckConstraint("length(quality_grade) >= 1", name="grade_not_empty"),
        in_check("risk_level", RISK_LEVELS),
        in_check("source", GRADE_SOURCES),
    )


class TradingSetting(TimestampMixin, Base):
    """Instrument settings of a user (PRODUCT §10). ``freeze_quantity`` is the exchange freeze limit in
    units; the slice size is derived (⌊freeze/lot⌋ × lot). ``max_lots_per_order`` is stored as derived."""

    __tablename__ = "trading_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    symbol: Mapped[str] = mapped_column(String(50), nullable=False)
    lot_size: Mapped[int] = mapped_column(Integer, default=25, server_default="25", nullable=False)
    # NULL = same as lot_size.
    next_month_lot_size: Mapped[int | None] = mapped_column(Integer)
    freeze_quantity: Mapped[int] = mapped_column(Integer, default=1800, server_default="1800", nullable=False)
    max_lots_per_order: Mapped[int] = mapped_column(Integer, default=36, server_default="36", nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)

    __table_args__ = (
        UniqueConstraint("user_id", "symbol"),
        CheckConstraint("lot_size BETWEEN 1 AND 1000", name="lot_size_range"),
        CheckConstraint("next_month_lot_size BETWEEN 1 AND 1000", name="next_month_lot_size_range"),
        CheckConstraint("freeze_quantity BETWEEN 1 AND 50000", name="freeze_quantity_range"),
        CheckConstraint("freeze_quantity >= lot_size", name="freeze_not_below_lot"),
        CheckConstraint("max_lots_per_order >= 1", name="max_lots_per_order_positive"),
    )


class TradingSettingRevision(CreatedAtMixin, Base):
    """An exchange revision of an instrument setting that takes effect on ``effective_from`` (IST date):
    from that day the lot size, freeze quantity and max lots replace the base row's. The latest revision
    whose date has come wins; earlier ones stay as history."""

    __tablename__ = "trading_setting_revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    setting_id: Mapped[int] = mapped_column(
        ForeignKey("trading_settings.id", ondelete="CASCADE"), nullable=False, index=True
    )
    effective_from: Mapped[date] = mapped_column(Date, nullable=False)
    lot_size: Mapped[int] = mapped_column(Integer, nullable=False)
    next_month_lot_size: Mapped[int | None] = mapped_column(Integer)
    freeze_quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    max_lots_per_order: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (
        UniqueConstraint("setting_id", "effective_from"),
        CheckConstraint("lot_size BETWEEN 1 AND 1000", name="revision_lot_size_range"),
        CheckConstraint("next_month_lot_size BETWEEN 1 AND 1000", name="revision_next_month_lot_size_range"),
        CheckConstraint("freeze_quantity BETWEEN 1 AND 50000", name="revision_freeze_quantity_range"),
        CheckConstraint("freeze_quantity >= lot_size", name="revision_freeze_not_below_lot"),
        CheckConstraint("max_lots_per_order >= 1", name="revision_max_lots_positive"),
    )
