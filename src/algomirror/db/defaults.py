"""Per-user default data: margin table (PRODUCT §9.1), grades A/B/C (§9.2), instrument settings (§10).

``seed_user_defaults`` is called by the web layer right after a user is created, in the same unit of
work. It only adds rows that are missing, so calling it again (or for an older user lacking some rows)
is harmless and never overwrites the user's edits. The tables are also exported for "reset to defaults".
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models.sizing import MarginRequirement, TradeQuality, TradingSetting
from algomirror.db.models.users import User


@dataclass(frozen=True)
class MarginDefaults:
    """Rupees per lot for one instrument."""

    single_sell_expiry: Decimal
    single_sell_non_expiry: Decimal
    pair_sell_expiry: Decimal
    pair_sell_non_expiry: Decimal
    futures_expiry: Decimal
    futures_non_expiry: Decimal
    buying_premium_per_lot: Decimal


@dataclass(frozen=True)
class GradeDefaults:
    grade: str
    percentage: Decimal
    risk_level: str
    source: str
    description: str


@dataclass(frozen=True)
class InstrumentDefaults:
    """Lot size and exchange freeze limit (units) for new users; slice = ⌊freeze/lot⌋ × lot."""

    lot_size: int
    freeze_quantity: int

    @property
    def max_lots_per_order(self) -> int:
        return max(1, self.freeze_quantity // self.lot_size)


_D = Decimal

DEFAULT_MARGINS: dict[str, MarginDefaults] = {
    "NIFTY": MarginDefaults(
        _D(205000), _D(250000), _D(250000), _D(320000), _D(215000), _D(215000), _D(20000)
    ),
    "BANKNIFTY": MarginDefaults(
        _D(205000), _D(250000), _D(250000), _D(320000), _D(215000), _D(215000), _D(20000)
    ),
    "SENSEX": MarginDefaults(
        _D(180000), _D(220000), _D(225000), _D(290000), _D(185000), _D(185000), _D(20000)
    ),
}

DEFAULT_GRADES: tuple[GradeDefaults, ...] = (
    GradeDefaults("A", _D(95), "aggressive", "available", "Deploys 95% of the seller margin base"),
    GradeDefaults("B", _D(65), "moderate", "available", "Deploys 65% of the seller margin base"),
    GradeDefaults("C", _D(36), "conservative", "available", "Deploys 36% of the seller margin base"),
)

# PRODUCT §10 "new users now" (the seed's May 2025 rows are outdated lot sizes).
DEFAULT_INSTRUMENTS: dict[str, InstrumentDefaults] = {
    "NIFTY": InstrumentDefaults(lot_size=65, freeze_quantity=1800),
    "BANKNIFTY": InstrumentDefaults(lot_size=30, freeze_quantity=600),
    "SENSEX": InstrumentDefaults(lot_size=20, freeze_quantity=1000),
}


@dataclass(frozen=True)
class SeededCounts:
    margin_requirements: int
    trade_qualities: int
    trading_settings: int


def margin_requirement_row(user_id: int, instrument: str) -> MarginRequirement:
    """A new margin row for ``instrument`` with the default figures. Raises KeyError for an unknown one."""
    d = DEFAULT_MARGINS[instrument]
    return MarginRequirement(
        user_id=user_id,
        instrument=instrument,
        ce_pe_sell_expiry=d.single_sell_expiry,
        ce_pe_sell_non_expiry=d.single_sell_non_expiry,
        ce_and_pe_sell_expiry=d.pair_sell_expiry,
        ce_and_pe_sell_non_expiry=d.pair_sell_non_expiry,
        futures_expiry=d.futures_expiry,
        futures_non_expiry=d.futures_non_expiry,
        buying_premium_per_lot=d.buying_premium_per_lot,
    )


def trading_setting_row(user_id: int, symbol: str) -> TradingSetting:
    """A new instrument-settings row with the defaults. Raises KeyError for an unknown symbol."""
    d = DEFAULT_INSTRUMENTS[symbol]
    return TradingSetting(
        user_id=user_id,
        symbol=symbol,
        lot_size=d.lot_size,
        next_month_lot_size=d.lot_size,
        freeze_quantity=d.freeze_quantity,
        max_lots_per_order=d.max_lots_per_order,
    )


def seed_user_defaults(session: Session, user: User) -> SeededCounts:
    """Add the default margin rows, grades A/B/C and instrument settings that ``user`` lacks.

    Flushes (so ``user`` gets an id if new) but does not commit: the caller's unit of work does. Existing
    rows are never changed. Returns how many rows of each kind were added.
    """
    if user.id is None:
        session.add(user)
        session.flush()
    uid = user.id

    have_margins = set(
        session.scalars(select(MarginRequirement.instrument).where(MarginRequirement.user_id == uid))
    )
    have_grades = set(session.scalars(select(TradeQuality.quality_grade).where(TradeQuality.user_id == uid)))
    have_settings = set(session.scalars(select(TradingSetting.symbol).where(TradingSetting.user_id == uid)))

    margins = [margin_requirement_row(uid, i) for i in DEFAULT_MARGINS if i not in have_margins]
    grades = [
        TradeQuality(
            user_id=uid,
            quality_grade=g.grade,
            margin_percentage=g.percentage,
            risk_level=g.risk_level,
            source=g.source,
            description=g.description,
            is_system=True,
        )
        for g in DEFAULT_GRADES
        if g.grade not in have_grades
    ]
    settings = [trading_setting_row(uid, s) for s in DEFAULT_INSTRUMENTS if s not in have_settings]
    session.add_all([*margins, *grades, *settings])
    session.flush()
    return SeededCounts(len(margins), len(grades), len(settings))
