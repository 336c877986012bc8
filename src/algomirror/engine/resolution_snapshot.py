"""What resolving a strategy reads from the database (PRODUCT §5.1–5.2): the strategy, its legs, its
selected accounts with their multipliers, the user's margin table, trade-quality grades, instrument
settings in force that day, other runs' margin reservations, and whether entries are halted or the
strategy already has an open run — all read in one short transaction by :func:`load_snapshot`, so the
broker reads that follow (:mod:`~algomirror.engine.resolver`) work on one consistent picture."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from algomirror.db.instrument_settings import effective_settings, margin_rates
from algomirror.db.models import (
    MarginRequirement,
    MarginTracker,
    Strategy,
    StrategyRun,
    TradeQuality,
    TradingAccount,
)
from algomirror.db.models.enums import OPEN_RUN_STATUSES
from algomirror.db.session import Database
from algomirror.domain.errors import DomainError
from algomirror.domain.reservations import reserved
from algomirror.domain.sizing import Grade, MarginRates
from algomirror.engine.entry_records import AccountInfo
from algomirror.engine.halts import entries_halted


def reason_of(exc: BaseException) -> str:
    """The first line of ``exc`` (its type's name when it has no text), at most 300 characters: how a
    failure reads as a reason on a preview."""
    return (str(exc) or type(exc).__name__).splitlines()[0][:300]


@dataclass(frozen=True, slots=True)
class SnapshotLeg:
    id: int
    number: int
    instrument: str
    product_type: str
    expiry: str
    action: str
    option_type: str | None
    selection: str
    offset: int
    strike_price: Decimal | None
    premium: Decimal | None
    lots: int

    @property
    def kind(self) -> str:
        return "FUT" if self.product_type == "futures" else (self.option_type or "")


@dataclass(frozen=True, slots=True)
class SnapshotAccount:
    id: int
    name: str
    host_url: str
    key: str | None
    is_primary: bool
    is_active: bool
    archived: bool
    status: str
    halted: str | None
    max_lots: int | None
    multiplier: Decimal
    collateral_included: bool

    @property
    def info(self) -> AccountInfo:
        return AccountInfo(self.id, self.name, self.host_url, self.key)


@dataclass(frozen=True, slots=True)
class SnapshotSetting:
    lot: int
    next_lot: int | None
    freeze: int


@dataclass
class Snapshot:
    strategy_id: int
    user_id: int
    name: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    risk_profile: str = "fixed_lots"
    allocation: str = "equal"
    product: str = "MIS"
    market_condition: str = "any"
    square_off: time | None = None
    on_leg_failure: str = "unwind"
    legs: list[SnapshotLeg] = field(default_factory=list)
    # Selected accounts in the strategy's order; None = not the user's (or gone).
    selected: list[tuple[int, SnapshotAccount | None, Decimal | None]] = field(default_factory=list)
    primary: SnapshotAccount | None = None
    margins: dict[str, MarginRates] = field(default_factory=dict)
    grades: dict[str, Grade] = field(default_factory=dict)
    settings: dict[str, SnapshotSetting] = field(default_factory=dict)
    open_run: int | None = None
    # Per selected account, ₹ other runs reserve on it while their entries go in (PRODUCT §9.5).
    reserved: dict[int, Decimal] = field(default_factory=dict)


def _multiplier(entry: Any) -> tuple[int | None, Decimal | None]:
    if isinstance(entry, int) and not isinstance(entry, bool):
        return entry, None
    if not isinstance(entry, dict):
        return None, None
    account_id = entry.get("account_id")
    if not isinstance(account_id, int) or isinstance(account_id, bool):
        return None, None
    raw = entry.get("multiplier")
    try:
        value = Decimal(str(raw)) if raw not in (None, "") else None
    except ArithmeticError:
        value = None
    return account_id, value if value is not None and value.is_finite() and value > 0 else None


def _account(row: TradingAccount) -> SnapshotAccount:
    return SnapshotAccount(
        id=row.id,
        name=row.account_name,
        host_url=row.host_url,
        key=row.api_key_encrypted,
        is_primary=row.is_primary,
        is_active=row.is_active,
        archived=row.archived_at is not None,
        status=row.connection_status,
        # Set by reconciliation (migration 0007); read defensively while that column is new.
        halted=getattr(row, "entries_halted_reason", None),
        max_lots=row.max_lots_per_leg,
        multiplier=row.allocation_multiplier,
        collateral_included=row.collateral_included,
    )


def load_snapshot(database: Database, user_id: int, strategy_id: int, day: date | None = None) -> Snapshot:
    """Everything resolution needs from the database, read in one short transaction; instrument settings
    as in force on IST date ``day`` (their base rows when None)."""
    snap = Snapshot(strategy_id=strategy_id, user_id=user_id)
    with database.session_factory() as session:
        strategy = session.get(Strategy, strategy_id)
        if strategy is None or strategy.user_id != user_id:
            snap.errors.append("strategy not found")
            return snap
        snap.name = strategy.name
        if strategy.archived_at is not None:
            snap.errors.append("the strategy is archived")
        if not strategy.is_active:
            snap.errors.append("the strategy is inactive: activate it to execute")
        snap.risk_profile = strategy.risk_profile
        snap.allocation = strategy.allocation_type
        snap.product = strategy.product_order_type
        snap.market_condition = strategy.market_condition
        snap.square_off = strategy.square_off_time
        snap.on_leg_failure = strategy.on_leg_failure
        if strategy.supertrend_exit_enabled and strategy.supertrend_exit_triggered:
            snap.warnings.append("the Supertrend exit is already in its exit state (PRODUCT §6.5)")
        for leg in strategy.legs:
            snap.legs.append(
                SnapshotLeg(
                    id=leg.id,
                    number=leg.leg_number,
                    instrument=(leg.instrument or "").upper(),
                    product_type=leg.product_type or "options",
                    expiry=leg.expiry or "current_week",
                    action=leg.action or "",
                    option_type=leg.option_type,
                    selection=leg.strike_selection or "ATM",
                    offset=leg.strike_offset,
                    strike_price=leg.strike_price,
                    premium=leg.premium_value,
                    lots=leg.lots,
                )
            )
        if not snap.legs:
            snap.errors.append("the strategy has no legs")
        owned = {
            row.id: _account(row)
            for row in session.scalars(select(TradingAccount).where(TradingAccount.user_id == user_id))
        }
        seen: set[int] = set()
        for entry in strategy.selected_accounts or []:
            account_id, multiplier = _multiplier(entry)
            if account_id is None or account_id in seen:
                continue
            seen.add(account_id)
            snap.selected.append((account_id, owned.get(account_id), multiplier))
        if not snap.selected:
            snap.errors.append("no accounts are selected for this strategy")
        for tracker in session.scalars(select(MarginTracker).where(MarginTracker.account_id.in_(list(seen)))):
            held = reserved(tracker.allocated_margins)
            if held > 0:
                snap.reserved[tracker.account_id] = held
        primaries = [a for a in owned.values() if a.is_primary]
        snap.primary = primaries[0] if primaries else None
        halted = entries_halted(session)
        if halted is not None:
            snap.errors.append(f"entries are halted: {halted}")
        snap.open_run = session.scalar(
            select(StrategyRun.id).where(
                StrategyRun.strategy_id == strategy_id, StrategyRun.status.in_(OPEN_RUN_STATUSES)
            )
        )
        for m in session.scalars(
            select(MarginRequirement).where(
                MarginRequirement.user_id == user_id, MarginRequirement.is_active.is_(True)
            )
        ):
            try:
                snap.margins[m.instrument.upper()] = margin_rates(m)
            except DomainError as exc:
                snap.warnings.append(f"margin row {m.instrument} is unusable: {reason_of(exc)}")
        for g in session.scalars(
            select(TradeQuality).where(TradeQuality.user_id == user_id, TradeQuality.is_active.is_(True))
        ):
            try:
                snap.grades[g.quality_grade] = Grade(g.quality_grade, g.margin_percentage, g.source)  # type: ignore[arg-type]
            except DomainError as exc:
                snap.warnings.append(f"grade {g.quality_grade} is unusable: {reason_of(exc)}")
        for symbol, s in effective_settings(session, user_id, day or date.min).items():
            snap.settings[symbol] = SnapshotSetting(s.lot_size, s.next_month_lot_size, s.freeze_quantity)
    return snap


__all__ = ["Snapshot", "SnapshotAccount", "SnapshotLeg", "SnapshotSetting", "load_snapshot", "reason_of"]
