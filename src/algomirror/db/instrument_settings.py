"""A user's instrument settings as in force on a day: the base ``trading_settings`` row, or its latest
``trading_setting_revisions`` row whose ``effective_from`` has come (PRODUCT §10: exchange revisions of lot
sizes and freeze limits are data with an effective date)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models.sizing import MarginRequirement, TradingSetting, TradingSettingRevision
from algomirror.domain.sizing import MarginRates


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


def revisions_in_force(
    session: Session, setting_ids: Collection[int], day: date
) -> dict[int, TradingSettingRevision]:
    """Setting id → its latest revision whose ``effective_from`` is on or before IST date ``day``
    (settings with none in force are left out). One read."""
    if not setting_ids:
        return {}
    found: dict[int, TradingSettingRevision] = {}
    revisions = session.scalars(
        select(TradingSettingRevision)
        .where(
            TradingSettingRevision.setting_id.in_(list(setting_ids)),
            TradingSettingRevision.effective_from <= day,
        )
        .order_by(TradingSettingRevision.effective_from)
    )
    for r in revisions:  # ascending: the latest revision in force is written last
        found[r.setting_id] = r
    return found


def effective_settings(session: Session, user_id: int, day: date) -> dict[str, EffectiveSetting]:
    """The user's active instrument settings on IST date ``day``, by upper-case symbol (two reads of
    columns, not ORM objects: every exit's plan reads them on the way to its first order)."""
    bases = session.execute(
        select(
            TradingSetting.id,
            TradingSetting.symbol,
            TradingSetting.lot_size,
            TradingSetting.next_month_lot_size,
            TradingSetting.freeze_quantity,
            TradingSetting.max_lots_per_order,
        ).where(TradingSetting.user_id == user_id, TradingSetting.is_active.is_(True))
    ).all()
    found: dict[str, EffectiveSetting] = {
        b.symbol.upper(): EffectiveSetting(
            b.symbol.upper(), b.lot_size, b.next_month_lot_size, b.freeze_quantity, b.max_lots_per_order, None
        )
        for b in bases
    }
    if not bases:
        return found
    symbol_of = {b.id: b.symbol.upper() for b in bases}
    revisions = session.execute(
        select(
            TradingSettingRevision.setting_id,
            TradingSettingRevision.lot_size,
            TradingSettingRevision.next_month_lot_size,
            TradingSettingRevision.freeze_quantity,
            TradingSettingRevision.max_lots_per_order,
            TradingSettingRevision.effective_from,
        )
        .where(
            TradingSettingRevision.setting_id.in_(list(symbol_of)),
            TradingSettingRevision.effective_from <= day,
        )
        .order_by(TradingSettingRevision.effective_from, TradingSettingRevision.id)
    )
    for r in revisions:  # ascending: the latest revision in force is written last
        symbol = symbol_of[r.setting_id]
        found[symbol] = EffectiveSetting(
            symbol,
            r.lot_size,
            r.next_month_lot_size,
            r.freeze_quantity,
            r.max_lots_per_order,
            r.effective_from,
        )
    return found


def margin_rates(row: MarginRequirement) -> MarginRates:
    """The sizing domain's rates (₹ per lot) of one margin_requirements row. Raises DomainError for
    figures the domain refuses (a negative or missing margin)."""
    return MarginRates(
        single_sell_expiry=row.ce_pe_sell_expiry,
        single_sell_non_expiry=row.ce_pe_sell_non_expiry,
        pair_sell_expiry=row.ce_and_pe_sell_expiry,
        pair_sell_non_expiry=row.ce_and_pe_sell_non_expiry,
        futures_expiry=row.futures_expiry,
        futures_non_expiry=row.futures_non_expiry,
        buying_premium_per_lot=row.buying_premium_per_lot,
    )


__all__ = ["EffectiveSetting", "effective_settings", "margin_rates", "revisions_in_force"]
