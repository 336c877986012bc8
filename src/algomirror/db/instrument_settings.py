"""A user's instrument settings as in force on a day: the base ``trading_settings`` row, or its latest
``trading_setting_revisions`` row whose ``effective_from`` has come (PRODUCT §10: exchange revisions of lot
sizes and freeze limits are data with an effective date)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models.sizing import TradingSetting, TradingSettingRevision


@dataclass(frozen=True, slots=True)
class EffectiveSetting:
    """Lot size, next-month lot size (None = same), freeze quantity (units) and max lots per order of a
    symbol on a day; ``effective_from`` is the revision's date, None for the base row."""

    symbol: str
    lot_size: int
    next_month_lot_size: int | None
    freeze_quantity: int
    max_lots_per_order: int
    effective_from: date | None


def effective_settings(session: Session, user_id: int, day: date) -> dict[str, EffectiveSetting]:
    """The user's active instrument settings on IST date ``day``, by upper-case symbol (two reads)."""
    bases = session.scalars(
        select(TradingSetting).where(TradingSetting.user_id == user_id, TradingSetting.is_active.is_(True))
    ).all()
    found = {
        s.id: EffectiveSetting(
            s.symbol.upper(), s.lot_size, s.next_month_lot_size, s.freeze_quantity, s.max_lots_per_order, None
        )
        for s in bases
    }
    if found:
        revisions = session.scalars(
            select(TradingSettingRevision)
            .where(
                TradingSettingRevision.setting_id.in_(list(found)),
                TradingSettingRevision.effective_from <= day,
            )
            .order_by(TradingSettingRevision.effective_from)
        )
        for r in revisions:  # ascending: the latest revision in force is written last
            found[r.setting_id] = EffectiveSetting(
                found[r.setting_id].symbol,
                r.lot_size,
                r.next_month_lot_size,
                r.freeze_quantity,
                r.max_lots_per_order,
                r.effective_from,
            )
    return {s.symbol: s for s in found.values()}


__all__ = ["EffectiveSetting", "effective_settings"]
