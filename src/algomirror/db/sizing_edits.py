"""Validated edits of a user's sizing settings (PRODUCT §9.1, §9.2, §10): instrument settings, the margin
table and grades. Framework-free: the pages hand in the submitted fields as a mapping of strings.

Each edit either raises :class:`FieldErrors` (field name → message; nothing changed) or changes the rows
in the caller's session and returns what changed as ``"field: old → new"`` lines for the activity log.
The caller commits. A running engine reads these rows at its next command, so no restart is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, object_session

from algomirror.db.defaults import (
    DEFAULT_INSTRUMENTS,
    DEFAULT_MARGINS,
    margin_requirement_row,
    trading_setting_row,
)
from algomirror.db.models import Strategy
from algomirror.db.models.enums import GRADE_SOURCES, RISK_LEVELS
from algomirror.db.models.sizing import (
    MarginRequirement,
    TradeQuality,
    TradingSetting,
    TradingSettingRevision,
)
from algomirror.domain.sizing import GRADE_PREFIX, LEGACY_PROFILE_GRADES

Form = Mapping[str, str]
MAX_MARGIN_RUPEES = Decimal("100000000")  # ₹10 crore per lot: far above any real figure

# (column, label) of the margin table's editable figures, in the page's order.
MARGIN_FIELDS: tuple[tuple[str, str], ...] = (
    ("ce_pe_sell_expiry", "One side sold, expiry day"),
    ("ce_pe_sell_non_expiry", "One side sold, other day"),
    ("ce_and_pe_sell_expiry", "CE and PE sold, expiry day"),
    ("ce_and_pe_sell_non_expiry", "CE and PE sold, other day"),
    ("futures_expiry", "Futures, expiry day"),
    ("futures_non_expiry", "Futures, other day"),
    ("buying_premium_per_lot", "Option-buying premium per lot"),
)


class FieldErrors(Exception):
    """The submitted fields that are wrong (field name → message); nothing was changed."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class GradeInUse(Exception):
    """A grade cannot be deleted: it is a system grade, or strategies size by it."""


def _int(form: Form, name: str, label: str, lo: int, hi: int, errors: dict[str, str]) -> int | None:
    text = (form.get(name) or "").strip().replace(",", "")
    if not text:
        errors[name] = f"{label} is required."
        return None
    # ASCII digits only: str.isdigit() accepts "²" or "٣", which int() then rejects or reads differently.
    if not (text.isascii() and text.isdigit()):
        errors[name] = f"{label} must be a whole number from {lo:,} to {hi:,}."
        return None
    value = int(text)
    if not lo <= value <= hi:
        errors[name] = f"{label} must be from {lo:,} to {hi:,} (got {value:,})."
        return None
    return value


def _decimal(
    form: Form, name: str, label: str, errors: dict[str, str], *, hi: Decimal, places: int = 2
) -> Decimal | None:
    text = (form.get(name) or "").strip().replace(",", "").removeprefix("₹").strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        errors[name] = f"{label} must be a number." if text else f"{label} is required."
        return None
    exponent = value.as_tuple().exponent
    if not value.is_finite() or (isinstance(exponent, int) and exponent < -places):
        errors[name] = f"{label} must be a number with at most {places} decimals."
        return None
    if value <= 0 or value > hi:
        errors[name] = f"{label} must be above 0 and at most {hi:,}."
        return None
    return value


def _checked(form: Form, name: str) -> bool:
    return form.get(name) in {"y", "on", "1", "true"}


def _active(form: Form, current: bool) -> bool:
    """The submitted active flag. An unticked checkbox sends nothing, so a missing ``is_active`` means
    "off" only when the form carried the box (its hidden ``is_active_present`` marker, rendered beside
    every box); a form without either field leaves the flag as it was."""
    if "is_active" in form or "is_active_present" in form:
        return _checked(form, "is_active")
    return current


def slice_of(lot: int, freeze: int) -> tuple[int, int]:
    """(lots per order, units per order) for an exchange freeze limit: ⌊freeze/lot⌋ lots, at least 1."""
    lots = max(1, freeze // lot)
    return lots, lots * lot


def _change(changes: list[str], label: str, old: object, new: object) -> None:
    if old != new:
        changes.append(f"{label}: {old} → {new}")


def update_trading_setting(
    row: TradingSetting, form: Form, *, in_force: TradingSettingRevision | None = None
) -> list[str]:
    """Lot size (1–1000), next-month lot size (1–1000 or empty = same), freeze quantity (1–50,000, ≥ lot
    and ≥ next-month lot; a freeze that is not a whole number of lots needs ``confirm_slice`` unless lot
    and freeze are those already saved) and active; max lots per order is derived.

    ``in_force``: the revision in force today, if any. It replaces the base row's figures wherever they
    are used, so a change of the figures is refused (error key ``in_force``, naming the revision); the
    figures it shows submitted unchanged save only the active flag. Raises FieldErrors."""
    errors: dict[str, str] = {}
    lot = _int(form, "lot_size", "Lot size", 1, 1000, errors)
    next_text = (form.get("next_month_lot_size") or "").strip()
    next_lot = (
        _int(form, "next_month_lot_size", "Next-month lot size", 1, 1000, errors) if next_text else None
    )
    freeze = _int(form, "freeze_quantity", "Freeze quantity", 1, 50000, errors)
    if in_force is not None:
        shown = (in_force.lot_size, in_force.next_month_lot_size, in_force.freeze_quantity)
        if (lot, next_lot, freeze) != shown:
            errors["in_force"] = (
                f"A revision dated {in_force.effective_from.isoformat()} is in force: add a revision"
                " dated today, or delete that one."
            )
            raise FieldErrors(errors)
        # Only the active flag is the base row's own while a revision is in force.
        active = _active(form, row.is_active)
        changes: list[str] = []
        _change(changes, "active", row.is_active, active)
        row.is_active = active
        return changes
    # The saved lot and freeze were confirmed (or seeded) already: asking again on every save of an
    # unchanged row (the seeded NIFTY 65 / 1,800) only trains people to tick the box blindly.
    unchanged = (lot, freeze) == (row.lot_size, row.freeze_quantity)
    if lot is not None and freeze is not None:
        if freeze < lot:
            errors["freeze_quantity"] = f"Freeze quantity {freeze:,} is below the lot size {lot:,}."
        elif next_lot is not None and freeze < next_lot:
            errors["freeze_quantity"] = (
                f"Freeze quantity {freeze:,} is below the next-month lot size {next_lot:,}."
            )
        elif freeze % lot and not unchanged and not _checked(form, "confirm_slice"):
            lots, units = slice_of(lot, freeze)
            errors["freeze_quantity"] = (
                f"{freeze:,} is not a multiple of lot {lot:,}:"
                f" orders will be sliced at {units:,} ({lots} lots)."
                f' Tick "I confirm slicing at {units:,}" to save it.'
            )
    if errors or lot is None or freeze is None:
        raise FieldErrors(errors)
    changes = []
    max_lots = slice_of(lot, freeze)[0]
    active = _active(form, row.is_active)
    _change(changes, "lot size", row.lot_size, lot)
    _change(changes, "next-month lot size", row.next_month_lot_size, next_lot)
    _change(changes, "freeze quantity", row.freeze_quantity, freeze)
    _change(changes, "max lots per order", row.max_lots_per_order, max_lots)
    _change(changes, "active", row.is_active, active)
    row.lot_size, row.next_month_lot_size, row.freeze_quantity = lot, next_lot, freeze
    row.max_lots_per_order, row.is_active = max_lots, active
    return changes


def update_margin_row(row: MarginRequirement, form: Form) -> list[str]:
    """Every figure of :data:`MARGIN_FIELDS` (₹ > 0, at most 2 decimals) and active. Raises FieldErrors."""
    errors: dict[str, str] = {}
    values = {
        name: _decimal(form, name, label, errors, hi=MAX_MARGIN_RUPEES) for name, label in MARGIN_FIELDS
    }
    if errors:
        raise FieldErrors(errors)
    changes: list[str] = []
    for name, label in MARGIN_FIELDS:
        new = values[name]
        _change(changes, label.lower(), getattr(row, name), new)
        setattr(row, name, new)
    active = _active(form, row.is_active)
    _change(changes, "active", row.is_active, active)
    row.is_active = active
    return changes


def add_margin_row(session: Session, user_id: int, form: Form) -> MarginRequirement:
    """A new instrument row (name 1–50 letters/digits, upper-cased; not already present) with the figures
    given. Raises FieldErrors."""
    name = (form.get("instrument") or "").strip().upper()
    errors: dict[str, str] = {}
    if not name or len(name) > 50 or not name.replace("_", "").isalnum():
        errors["instrument"] = "Instrument must be 1–50 letters or digits, like MIDCPNIFTY."
    elif session.scalar(
        select(MarginRequirement.id).where(
            MarginRequirement.user_id == user_id, func.upper(MarginRequirement.instrument) == name
        )
    ):
        errors["instrument"] = f"{name} already has a margin row: edit it instead."
    row = MarginRequirement(user_id=user_id, instrument=name)
    try:
        update_margin_row(row, {**form, "is_active": "y"})
    except FieldErrors as exc:
        errors.update(exc.errors)
    if errors:
        raise FieldErrors(errors)
    session.add(row)
    return row


def _grade_fields(form: Form, errors: dict[str, str]) -> tuple[Decimal | None, str, str, str]:
    pct = _decimal(form, "margin_percentage", "Margin %", errors, hi=Decimal(100))
    if "margin_percentage" in errors and (form.get("margin_percentage") or "").strip():
        try:
            if Decimal((form.get("margin_percentage") or "").strip()) > 100:
                errors["margin_percentage"] = "Margin % must not exceed 100 %."
        except InvalidOperation:
            pass
    risk = (form.get("risk_level") or "").strip()
    if risk not in RISK_LEVELS:
        errors["risk_level"] = f"Risk level must be one of {', '.join(RISK_LEVELS)}."
    source = (form.get("source") or "").strip()
    if source not in GRADE_SOURCES:
        errors["source"] = "Source must be available (seller base) or cash (buyer base)."
    description = (form.get("description") or "").strip()
    if len(description) > 500:
        errors["description"] = "Description must be at most 500 characters."
    return pct, risk, source, description


def update_grade(row: TradeQuality, form: Form) -> list[str]:
    """Margin % in (0, 100], risk level, source, description, active. A grade strategies size by (see
    :func:`grade_users`; looked up in ``row``'s session) keeps its source and cannot be switched off:
    their next Execute would fail on an unknown or differently based grade. Raises FieldErrors."""
    errors: dict[str, str] = {}
    pct, risk, source, description = _grade_fields(form, errors)
    active = _active(form, row.is_active)
    session = object_session(row)
    switching_off = row.is_active and not active
    source_change = "source" not in errors and source != row.source
    if session is not None and row.user_id is not None and (switching_off or source_change):
        users = grade_users(session, row.user_id, row.quality_grade)
        if users:
            names = ", ".join(users)
            if switching_off:
                errors["is_active"] = (
                    f"Grade {row.quality_grade} is used by {names}: change those strategies first"
                    " to switch it off."
                )
            if source_change:
                errors["source"] = (
                    f"Grade {row.quality_grade} is used by {names}: change those strategies first"
                    " to change its source."
                )
    if errors or pct is None:
        raise FieldErrors(errors)
    changes: list[str] = []
    _change(changes, "margin %", row.margin_percentage, pct)
    _change(changes, "risk level", row.risk_level, risk)
    _change(changes, "source", row.source, source)
    _change(changes, "description", row.description or "", description)
    _change(changes, "active", row.is_active, active)
    row.margin_percentage, row.risk_level, row.source = pct, risk, source
    row.description, row.is_active = description or None, active
    return changes


def add_grade(session: Session, user_id: int, form: Form) -> TradeQuality:
    """A custom grade: name 1–20 letters, digits, '-' or '_', unique for the user. Raises FieldErrors."""
    name = (form.get("quality_grade") or "").strip()
    errors: dict[str, str] = {}
    if not name or len(name) > 20 or not name.replace("-", "").replace("_", "").isalnum():
        errors["quality_grade"] = "Grade name must be 1–20 letters, digits, '-' or '_'."
    elif session.scalar(
        select(TradeQuality.id).where(TradeQuality.user_id == user_id, TradeQuality.quality_grade == name)
    ):
        errors["quality_grade"] = f"Grade {name} exists already."
    pct, risk, source, description = _grade_fields(form, errors)
    if errors or pct is None:
        raise FieldErrors(errors)
    row = TradeQuality(
        user_id=user_id,
        quality_grade=name,
        margin_percentage=pct,
        risk_level=risk,
        source=source,
        description=description or None,
        is_system=False,
        is_active=True,
    )
    session.add(row)
    return row


def grade_users(session: Session, user_id: int, grade: str) -> list[str]:
    """Names of the user's strategies that size by ``grade`` (``grade_X``, or a legacy profile naming it)."""
    profiles = [f"{GRADE_PREFIX}{grade}", *(p for p, g in LEGACY_PROFILE_GRADES.items() if g == grade)]
    return list(
        session.scalars(
            select(Strategy.name)
            .where(Strategy.user_id == user_id, Strategy.risk_profile.in_(profiles))
            .order_by(Strategy.name)
        )
    )


def delete_grade(session: Session, row: TradeQuality) -> None:
    """Delete a custom grade no strategy uses. Raises GradeInUse (system grade, or in use)."""
    if row.is_system:
        raise GradeInUse(f"Grade {row.quality_grade} is a system grade: edit it, it cannot be deleted.")
    users = grade_users(session, row.user_id, row.quality_grade)
    if users:
        raise GradeInUse(
            f"Grade {row.quality_grade} is used by {', '.join(users)}: change those strategies first."
        )
    session.delete(row)


def reset_trading_settings(session: Session, user_id: int) -> list[str]:
    """Put the default instruments back to their defaults (other symbols untouched), updating the rows in
    place: a delete and insert would give them new ids and cascade-delete their exchange revisions,
    which stay. Adds a missing default row. Returns what changed, ``"NIFTY: lot size: 75 → 65"`` lines
    (old values for the activity log)."""
    rows = {
        r.symbol: r
        for r in session.scalars(
            select(TradingSetting).where(
                TradingSetting.user_id == user_id, TradingSetting.symbol.in_(list(DEFAULT_INSTRUMENTS))
            )
        )
    }
    changes: list[str] = []
    for symbol in DEFAULT_INSTRUMENTS:
        default = trading_setting_row(user_id, symbol)
        row = rows.get(symbol)
        if row is None:
            default.is_active = True
            session.add(default)
            changes.append(f"{symbol}: added")
            continue
        mine: list[str] = []
        _change(mine, "lot size", row.lot_size, default.lot_size)
        _change(mine, "next-month lot size", row.next_month_lot_size, default.next_month_lot_size)
        _change(mine, "freeze quantity", row.freeze_quantity, default.freeze_quantity)
        _change(mine, "max lots per order", row.max_lots_per_order, default.max_lots_per_order)
        _change(mine, "active", row.is_active, True)
        row.lot_size, row.next_month_lot_size = default.lot_size, default.next_month_lot_size
        row.freeze_quantity, row.max_lots_per_order = default.freeze_quantity, default.max_lots_per_order
        row.is_active = True
        changes.extend(f"{symbol}: {c}" for c in mine)
    return changes


def reset_margin_rows(session: Session, user_id: int) -> int:
    """Put the default instruments' margin rows back to the defaults; returns the count."""
    session.execute(
        delete(MarginRequirement).where(
            MarginRequirement.user_id == user_id, MarginRequirement.instrument.in_(list(DEFAULT_MARGINS))
        )
    )
    session.flush()
    session.add_all(margin_requirement_row(user_id, i) for i in DEFAULT_MARGINS)
    return len(DEFAULT_MARGINS)


def add_revision(session: Session, setting: TradingSetting, form: Form) -> TradingSettingRevision:
    """A dated exchange revision of ``setting``: effective date (YYYY-MM-DD, not already revised that day)
    and the same fields and rules as :func:`update_trading_setting`. A past date is allowed (a late
    entry) and applies at once. Raises FieldErrors."""
    errors: dict[str, str] = {}
    text = (form.get("effective_from") or "").strip()
    day: date | None = None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        errors["effective_from"] = (
            "Effective date must be a date like 2027-01-01." if text else ("Effective date is required.")
        )
    if day is not None and session.scalar(
        select(TradingSettingRevision.id).where(
            TradingSettingRevision.setting_id == setting.id, TradingSettingRevision.effective_from == day
        )
    ):
        errors["effective_from"] = f"{setting.symbol} already has a revision on {day.isoformat()}."
    probe = TradingSetting(
        symbol=setting.symbol, lot_size=setting.lot_size, freeze_quantity=setting.freeze_quantity
    )
    try:
        update_trading_setting(probe, {**form, "is_active": "y"})
    except FieldErrors as exc:
        errors.update(exc.errors)
    if errors or day is None:
        raise FieldErrors(errors)
    row = TradingSettingRevision(
        setting_id=setting.id,
        effective_from=day,
        lot_size=probe.lot_size,
        next_month_lot_size=probe.next_month_lot_size,
        freeze_quantity=probe.freeze_quantity,
        max_lots_per_order=probe.max_lots_per_order,
    )
    session.add(row)
    return row
