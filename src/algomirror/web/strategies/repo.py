"""Strategy queries and conversions for the builder. Every query takes the owner's ``user_id``: another
user's strategy (or an archived one) behaves exactly like one that does not exist."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from algomirror.db.models import Strategy, StrategyLeg, TradingAccount
from algomirror.db.models.sizing import TradeQuality
from algomirror.domain.sizing import FIXED_LOTS, GRADE_PREFIX, LEGACY_PROFILE_GRADES
from algomirror.web.strategies.forms import MIS_SQUARE_OFF, NAME_MAX
from algomirror.web.strategies.ready import ReadyTemplate

# Strategy columns the form edits (everything but ownership, state and the legs).
STRATEGY_FIELDS = (
    "name",
    "description",
    "market_condition",
    "risk_profile",
    "allocation_type",
    "product_order_type",
    "entry_time",
    "exit_time",
    "square_off_time",
    "max_loss",
    "max_profit",
    "trailing_sl",
    "trailing_sl_type",
    "auto_exit_on_max_loss",
    "auto_exit_on_max_profit",
    "risk_monitoring_enabled",
    "risk_scope",
    "on_leg_failure",
    "supertrend_exit_enabled",
    "supertrend_exit_type",
    "supertrend_period",
    "supertrend_multiplier",
    "supertrend_timeframe",
    "is_template",
)
LEG_FIELDS = (
    "instrument",
    "product_type",
    "expiry",
    "action",
    "option_type",
    "strike_selection",
    "strike_offset",
    "strike_price",
    "premium_value",
    "order_type",
    "limit_price",
    "trigger_price",
    "price_condition",
    "lots",
    "stop_loss_type",
    "stop_loss_value",
    "take_profit_type",
    "take_profit_value",
    "enable_trailing",
    "trailing_type",
    "trailing_value",
)


def list_strategies(session: Session, user_id: int) -> Sequence[Strategy]:
    """The user's live (not archived) strategies with their legs, most recently updated first."""
    return session.scalars(
        select(Strategy)
        .where(Strategy.user_id == user_id, Strategy.archived_at.is_(None))
        .options(selectinload(Strategy.legs))
        .order_by(Strategy.updated_at.desc(), Strategy.id.desc())
    ).all()


def get_strategy(session: Session, user_id: int, strategy_id: int) -> Strategy | None:
    """Strategy ``strategy_id`` if it is the user's and not archived, else None."""
    return session.scalar(
        select(Strategy).where(
            Strategy.id == strategy_id, Strategy.user_id == user_id, Strategy.archived_at.is_(None)
        )
    )


def name_taken(session: Session, user_id: int, name: str, *, exclude_id: int | None = None) -> bool:
    """Whether another live strategy of the user has exactly this name (the unique index's rule)."""
    query = select(Strategy.id).where(
        Strategy.user_id == user_id, Strategy.archived_at.is_(None), Strategy.name == name
    )
    if exclude_id is not None:
        query = query.where(Strategy.id != exclude_id)
    return session.scalar(query.limit(1)) is not None


def copy_name(session: Session, user_id: int, name: str) -> str:
    """The clone's name: ``<name> (copy)``, or ``(copy 2)``, ``(copy 3)``… when taken; the name is
    shortened to fit 100 characters."""
    n = 1
    while True:
        suffix = " (copy)" if n == 1 else f" (copy {n})"
        candidate = name[: NAME_MAX - len(suffix)].rstrip() + suffix
        if not name_taken(session, user_id, candidate):
            return candidate
        n += 1


def active_accounts(session: Session, user_id: int) -> dict[int, str]:
    """The user's active, live accounts: id → name, in creation order."""
    rows = session.execute(
        select(TradingAccount.id, TradingAccount.account_name)
        .where(
            TradingAccount.user_id == user_id,
            TradingAccount.is_active.is_(True),
            TradingAccount.archived_at.is_(None),
        )
        .order_by(TradingAccount.created_at, TradingAccount.id)
    ).all()
    return {int(i): str(n) for i, n in rows}


@dataclass(frozen=True, slots=True)
class Profiles:
    """The risk-profile choices (value, label) and the values that name a buyer (cash) grade."""

    choices: list[tuple[str, str]]
    cash: frozenset[str]


def risk_profiles(session: Session, user_id: int, current: str | None = None) -> Profiles:
    """Fixed lots plus one ``grade_<X>`` per active grade of the user; ``current`` (a stored value that is
    no longer offered, e.g. a legacy name) stays selectable."""
    grades = session.execute(
        select(TradeQuality.quality_grade, TradeQuality.margin_percentage, TradeQuality.source)
        .where(TradeQuality.user_id == user_id, TradeQuality.is_active.is_(True))
        .order_by(TradeQuality.quality_grade)
    ).all()
    choices = [(FIXED_LOTS, "Fixed lots")]
    cash: set[str] = set()
    for grade, percentage, source in grades:
        value = f"{GRADE_PREFIX}{grade}"
        where = "cash" if source == "cash" else "available margin"
        choices.append((value, f"Grade {grade} ({percentage.normalize():f}% of {where})"))
        if source == "cash":
            cash.add(value)
    if current and current not in {v for v, _ in choices}:
        legacy = LEGACY_PROFILE_GRADES.get(current)
        choices.append((current, f"{current} (grade {legacy})" if legacy else current))
    return Profiles(choices, frozenset(cash))


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return str(value)


def strategy_data(strategy: Strategy) -> dict[str, Any]:
    """The form's prefill for a stored strategy (numbers and times as the text the inputs show)."""
    data: dict[str, Any] = {}
    for name in STRATEGY_FIELDS:
        value = getattr(strategy, name)
        if name.endswith("_time"):
            data[name] = value.strftime("%H:%M") if value is not None else ""
        elif isinstance(value, bool):
            data[name] = value
        else:
            data[name] = _text(value)
    return data


def new_strategy_data() -> dict[str, Any]:
    """The defaults of a new strategy (PRODUCT §4.1): MIS with its 15:15 square-off shown."""
    return {"square_off_time": MIS_SQUARE_OFF.strftime("%H:%M")}


def leg_data(leg: StrategyLeg) -> dict[str, Any]:
    """A leg row's prefill; the contract column is the option type, FUT or EQ."""
    contract = {"futures": "FUT", "equity": "EQ"}.get(leg.product_type or "", leg.option_type or "CE")
    return {
        "leg_id": str(leg.id) if leg.id else "",
        "instrument": leg.instrument or "",
        "option_type": contract,
        "expiry": leg.expiry or "current_week",
        "action": leg.action or "BUY",
        "strike_selection": leg.strike_selection or "ATM",
        "strike_offset": str(leg.strike_offset) if leg.strike_offset else "",
        "strike_price": _text(leg.strike_price),
        "premium_value": _text(leg.premium_value),
        "order_type": leg.order_type or "MARKET",
        "limit_price": _text(leg.limit_price),
        "trigger_price": _text(leg.trigger_price),
        "price_condition": leg.price_condition or "",
        "lots": str(leg.lots),
        "stop_loss_type": leg.stop_loss_type or "",
        "stop_loss_value": _text(leg.stop_loss_value),
        "take_profit_type": leg.take_profit_type or "",
        "take_profit_value": _text(leg.take_profit_value),
        "enable_trailing": leg.enable_trailing,
        "trailing_type": leg.trailing_type or "points",
        "trailing_value": _text(leg.trailing_value),
    }


def template_legs(template: ReadyTemplate) -> list[dict[str, Any]]:
    """The leg rows of a ready template (new legs: no leg id)."""
    rows = []
    for spec in template.legs:
        row = leg_data(StrategyLeg(lots=spec.lots, strike_offset=spec.strike_offset, enable_trailing=False))
        row.update(
            instrument=spec.instrument,
            option_type=spec.option_type,
            expiry=spec.expiry,
            action=spec.action,
            strike_selection=spec.strike_selection,
            strike_offset=str(spec.strike_offset) if spec.strike_offset else "",
        )
        rows.append(row)
    return rows


def templates(session: Session, user_id: int) -> Sequence[Strategy]:
    """The user's own templates (``is_template``), by name."""
    return session.scalars(
        select(Strategy)
        .where(Strategy.user_id == user_id, Strategy.archived_at.is_(None), Strategy.is_template.is_(True))
        .order_by(Strategy.name, Strategy.id)
    ).all()


def selected_ids(strategy: Strategy) -> list[int]:
    """The account ids stored in ``selected_accounts`` (entries that are not readable are skipped)."""
    ids: list[int] = []
    for entry in strategy.selected_accounts or []:
        raw = entry.get("account_id") if isinstance(entry, Mapping) else entry
        if isinstance(raw, int) and not isinstance(raw, bool):
            ids.append(raw)
        elif isinstance(raw, str) and raw.isdigit():
            ids.append(int(raw))
    return ids


def multipliers(strategy: Strategy) -> dict[int, str]:
    """The per-account lot multipliers stored in ``selected_accounts`` (custom allocation), as text."""
    found: dict[int, str] = {}
    for entry, account_id in zip(strategy.selected_accounts or [], _entry_ids(strategy), strict=True):
        if account_id is not None and isinstance(entry, Mapping) and entry.get("multiplier") is not None:
            found[account_id] = str(entry["multiplier"])
    return found


def selection(account_ids: Sequence[int], factors: Mapping[int, Decimal]) -> list[dict[str, Any]]:
    """``selected_accounts`` for ``account_ids``: a multiplier (as a string) only where one was given."""
    result: list[dict[str, Any]] = []
    for account_id in account_ids:
        item: dict[str, Any] = {"account_id": account_id}
        if account_id in factors:
            item["multiplier"] = f"{factors[account_id].normalize():f}"
        result.append(item)
    return result


def clone(session: Session, source: Strategy, name: str, usable_accounts: Mapping[int, str]) -> Strategy:
    """An inactive copy of ``source`` with its legs (no runs, no executed flags); accounts only those that
    are still the user's and active. The caller commits."""
    copy = Strategy(user_id=source.user_id, is_active=False)
    for field_name in STRATEGY_FIELDS:
        setattr(copy, field_name, getattr(source, field_name))
    copy.name = name
    copy.risk_check_interval = source.risk_check_interval
    copy.selected_accounts = [
        entry
        for entry, account_id in zip(source.selected_accounts or [], _entry_ids(source), strict=True)
        if account_id in usable_accounts
    ]
    for leg in source.legs:
        new_leg = StrategyLeg(leg_number=leg.leg_number, quantity=leg.quantity)
        for field_name in LEG_FIELDS:
            setattr(new_leg, field_name, getattr(leg, field_name))
        copy.legs.append(new_leg)
    session.add(copy)
    session.flush()
    return copy


def _entry_ids(strategy: Strategy) -> list[int | None]:
    result: list[int | None] = []
    for entry in strategy.selected_accounts or []:
        raw = entry.get("account_id") if isinstance(entry, Mapping) else entry
        result.append(int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None)
    return result


__all__ = [
    "LEG_FIELDS",
    "STRATEGY_FIELDS",
    "Profiles",
    "active_accounts",
    "clone",
    "copy_name",
    "get_strategy",
    "leg_data",
    "list_strategies",
    "multipliers",
    "name_taken",
    "new_strategy_data",
    "risk_profiles",
    "selected_ids",
    "selection",
    "strategy_data",
    "template_legs",
    "templates",
]
