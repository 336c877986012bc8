"""From a saved strategy to orders: resolution, ``preview_strategy`` and ``execute_strategy`` commands
(PRODUCT §4.2 preview, §5.1–5.8; DESIGN §3).

The web never calls a broker: it queues a command, and :class:`StrategyResolver` (one engine component,
two command kinds, each claimed ``pending → running`` exactly once with the entry executor's machinery)
resolves the strategy on the engine's client registry:

1. **Pre-checks** (PRODUCT §5.1), each with its own message: the strategy exists, is the user's, active,
   not archived, has legs and selected accounts; entries are not halted; it is not past the strategy's
   square-off time; each leg's exchange is in session. Every selected account is owned, active, not
   archived, not ``auth_failed``, not halted by reconciliation and has a readable key — else it is
   skipped with that reason.
2. **Market data from the feed account** (PRODUCT §5.2): the user's primary account when healthy (active,
   connected, key readable and accepted), else the next healthy selected account. Per run: the spot of
   each instrument is read ONCE (index LTP), the expiry list once per (instrument, options|futures), the
   option chain once per (instrument, expiry) for the listed strikes, one multiquotes batch per
   ``premium_near`` leg (its scan strikes) and one for the LTPs of every resolved symbol.
3. **Per leg**: expiry (:func:`~algomirror.domain.expiry_choice.resolve_expiry`), strike (ATM half up,
   ITM/OTM k counted in listed strikes, an exact strike must be listed, premium-near X with its tie rule
   and deviation warning), symbol, lot size and freeze limit (contract data, then instrument data, then
   the user's instrument settings; a mismatch with the settings is a warning). A failure fails the leg
   on every account ("could not resolve expiry: …").
4. **Per account**: fresh funds from the account itself (a failed read skips it as "funds unavailable",
   it is never sized from 0); lots by fixed allocation or by grade (:mod:`algomirror.domain.sizing`);
   freeze slices; the estimated margin from the user's margin table against the seller base — more
   than the account has skips it with both ₹ figures. A short is never planned without the BUY legs
   that hedge it; a leg that cannot be placed (not resolved, market closed) skips the whole account
   under ``on_leg_failure = unwind`` (the entry would unwind it anyway), only itself under ``keep``; a
   leg sized to 0 lots is skipped on that account alone (PRODUCT §5.7).
5. **Warnings**: naked short (a SELL option without a same-type BUY), premium far from its target,
   settings lot size differing from the contract's, a day that does not match the market condition, an
   open run (Execute refused until it closes).

``preview_strategy`` ends ``done`` with ``{"preview": …}`` (see :meth:`Resolution.to_json`) even when
nothing could be placed: the reasons are in it. ``execute_strategy`` resolves afresh, then in ONE
transaction plans the run (:func:`~algomirror.engine.planning.plan_run`, skipped accounts on its result,
spot and ATM on the run), queues its ``execute_run`` (token ``run-of:{command_id}``) and finishes its own
command with ``{"run_id": …}`` — a crash before that commit leaves the command ``running``, recovered to
``pending`` and resolved again; after it nothing is left to repeat. Nothing plannable, or an open run:
``failed`` with ``{"error": text, "reasons": […], "preview": …}``. No exception escapes as the user's
answer: a broker error is a reason.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import BrokerError
from algomirror.broker.registry import ClientRegistry
from algomirror.broker.wire.instruments import OptionChain
from algomirror.db.instrument_settings import effective_settings, margin_rates
from algomirror.db.models import (
    EngineCommand,
    MarginRequirement,
    MarginTracker,
    Strategy,
    StrategyRun,
    TradeQuality,
    TradingAccount,
)
from algomirror.db.models.enums import OPEN_RUN_STATUSES
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.contract_specs import freeze_slices
from algomirror.domain.errors import DomainError, ExecuteRefused, FundsUnavailable
from algomirror.domain.expiry_choice import resolve_expiry
from algomirror.domain.instruments import exchanges_for, future_symbol, option_symbol, underlying_spec
from algomirror.domain.money import format_inr
from algomirror.domain.reservations import funds_left, reserve, reserved
from algomirror.domain.resolution import (
    LegShape,
    SizedLeg,
    atm_for,
    contract_size,
    estimate_margins,
    naked_shorts,
    pick_strike,
)
from algomirror.domain.sizing import (
    AccountFunds,
    AccountShare,
    Grade,
    LegSize,
    MarginRates,
    SizingLeg,
    resolve_grade,
    seller_base,
    size_account,
    size_fixed,
)
from algomirror.domain.strikes import atm_strike, premium_scan_strikes, select_premium_near
from algomirror.domain.timeutil import Clock, to_ist
from algomirror.engine.command_rows import MAX_ERROR
from algomirror.engine.entry_records import AccountInfo
from algomirror.engine.execution import EntryExecutor, ExecuteOutcome, ExecutionConfig, ExecutionError
from algomirror.engine.halts import entries_halted
from algomirror.engine.planning import PlannedExecution, plan_run, request_execute
from algomirror.host_settings import load_host_policy

log = logging.getLogger(__name__)

T = TypeVar("T")

PREVIEW_STRATEGY = "preview_strategy"
EXECUTE_STRATEGY = "execute_strategy"
RESOLUTION_KINDS = (PREVIEW_STRATEGY, EXECUTE_STRATEGY)
# Options are not sent before the regular open even in a session that starts earlier (PRODUCT §5.1).
OPTIONS_OPEN = time(9, 15)
# The id of the command a runner task is performing (the run's execute token is derived from it).
_CURRENT: contextvars.ContextVar[int] = contextvars.ContextVar("resolution_command")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _plain(value: Decimal) -> Decimal:
    """26200.0 → 26200 (a chain's float strikes arrive with a decimal place)."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def _why(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:300]


# --------------------------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, slots=True)
class _Leg:
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
class _Account:
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
class _Setting:
    lot: int
    next_lot: int | None
    freeze: int


@dataclass
class _Snapshot:
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
    legs: list[_Leg] = field(default_factory=list)
    # Selected accounts in the strategy's order; None = not the user's (or gone).
    selected: list[tuple[int, _Account | None, Decimal | None]] = field(default_factory=list)
    primary: _Account | None = None
    margins: dict[str, MarginRates] = field(default_factory=dict)
    grades: dict[str, Grade] = field(default_factory=dict)
    settings: dict[str, _Setting] = field(default_factory=dict)
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


def _account(row: TradingAccount) -> _Account:
    return _Account(
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


def load_snapshot(database: Database, user_id: int, strategy_id: int, day: date | None = None) -> _Snapshot:
    """Everything resolution needs from the database, read in one short transaction; instrument settings
    as in force on IST date ``day`` (their base rows when None)."""
    snap = _Snapshot(strategy_id=strategy_id, user_id=user_id)
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
                _Leg(
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
                snap.warnings.append(f"margin row {m.instrument} is unusable: {_why(exc)}")
        for g in session.scalars(
            select(TradeQuality).where(TradeQuality.user_id == user_id, TradeQuality.is_active.is_(True))
        ):
            try:
                snap.grades[g.quality_grade] = Grade(g.quality_grade, g.margin_percentage, g.source)  # type: ignore[arg-type]
            except DomainError as exc:
                snap.warnings.append(f"grade {g.quality_grade} is unusable: {_why(exc)}")
        for symbol, s in effective_settings(session, user_id, day or date.min).items():
            snap.settings[symbol] = _Setting(s.lot_size, s.next_month_lot_size, s.freeze_quantity)
    return snap


# ------------------------------------------------------------------------------------------- the result


@dataclass
class LegResult:
    """One leg as resolved for every account (same contract everywhere, PRODUCT §5.2)."""

    leg: _Leg
    exchange: str | None = None
    expiry: date | None = None
    strike: Decimal | None = None
    symbol: str | None = None
    ltp: Decimal | None = None
    lot_size: int | None = None
    freeze: int | None = None
    error: str | None = None  # the leg fails on every account
    blocked: str | None = None  # resolved, but cannot be placed now (market closed)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.symbol is not None and self.lot_size is not None


@dataclass
class AccountResult:
    """One selected account: why it is skipped (None = planned), its funds and warnings."""

    account_id: int
    name: str
    reason: str | None = None
    funds: AccountFunds | None = None
    available: Decimal | None = None
    margin: Decimal | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Cell:
    """One leg × account: lots, quantity, slices, estimated margin, and why it is not placed."""

    leg_id: int
    account_id: int
    lots: int = 0
    quantity: int = 0
    slices: list[int] = field(default_factory=list)
    margin: Decimal | None = None
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None


@dataclass
class Resolution:
    """What resolving a strategy found; ``errors`` refuse the whole Execute."""

    strategy_id: int
    strategy_name: str
    resolved_at: datetime
    product: str
    feed: _Account | None = None
    spot: dict[str, Decimal] = field(default_factory=dict)
    atm: dict[str, Decimal] = field(default_factory=dict)
    instrument_errors: dict[str, str] = field(default_factory=dict)
    legs: list[LegResult] = field(default_factory=list)
    accounts: list[AccountResult] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    open_run: int | None = None

    def planned(self) -> list[PlannedExecution]:
        """The leg × account pairs an Execute plans (every ``ok`` cell)."""
        legs = {r.leg.id: r for r in self.legs}
        out = []
        for cell in self.cells:
            leg = legs[cell.leg_id]
            if cell.status == "ok" and leg.symbol and leg.exchange:
                out.append(
                    PlannedExecution(
                        cell.leg_id,
                        cell.account_id,
                        leg.symbol,
                        leg.exchange,
                        self.product,
                        cell.quantity,
                        leg.leg.instrument,
                    )
                )
        return out

    def skipped(self) -> list[tuple[int, str]]:
        """(account id, reason) of every selected account an Execute leaves out."""
        return [(a.account_id, a.reason) for a in self.accounts if a.reason is not None]

    def reasons(self) -> list[str]:
        """Every reason nothing (or not everything) is placed, for a failed command's error."""
        out = list(self.errors)
        out += [f"leg {r.leg.number}: {r.error}" for r in self.legs if r.error]
        out += [f"leg {r.leg.number}: {r.blocked}" for r in self.legs if r.blocked and not r.error]
        out += [f"{a.name}: {a.reason}" for a in self.accounts if a.reason]
        return list(dict.fromkeys(out))

    def to_json(self) -> dict[str, Any]:
        """The preview as JSON (amounts and prices as decimal strings, dates ISO)."""
        names = {a.account_id: a.name for a in self.accounts}
        return {
            "strategy_id": self.strategy_id,
            "strategy_name": self.strategy_name,
            "resolved_at": self.resolved_at.isoformat(),
            "feed_account": None if self.feed is None else {"id": self.feed.id, "name": self.feed.name},
            "instruments": {
                name: {
                    "spot": _text(self.spot.get(name)),
                    "atm": _text(self.atm.get(name)),
                    "error": self.instrument_errors.get(name),
                }
                for name in sorted({r.leg.instrument for r in self.legs})
            },
            "legs": [
                {
                    "leg_id": r.leg.id,
                    "leg_number": r.leg.number,
                    "instrument": r.leg.instrument,
                    "action": r.leg.action,
                    "kind": r.leg.kind,
                    "selection": r.leg.selection,
                    "exchange": r.exchange,
                    "expiry": r.expiry.isoformat() if r.expiry else None,
                    "strike": _text(r.strike),
                    "symbol": r.symbol,
                    "ltp": _text(r.ltp),
                    "lot_size": r.lot_size,
                    "freeze": r.freeze,
                    "error": r.error,
                    "blocked": r.blocked,
                    "warnings": r.warnings,
                }
                for r in self.legs
            ],
            "accounts": [
                {
                    "account_id": a.account_id,
                    "name": a.name,
                    "status": "skipped" if a.reason else "ok",
                    "reason": a.reason,
                    "available_funds": _text(a.available),
                    "estimated_margin": _text(a.margin),
                    "warnings": a.warnings,
                }
                for a in self.accounts
            ],
            "rows": [
                {
                    "leg_id": c.leg_id,
                    "account_id": c.account_id,
                    "account_name": names.get(c.account_id, ""),
                    "lots": c.lots,
                    "quantity": c.quantity,
                    "slices": c.slices,
                    "estimated_margin": _text(c.margin),
                    "status": c.status,
                    "reason": c.reason,
                }
                for c in self.cells
            ],
            "errors": self.errors,
            "warnings": self.warnings,
            "open_run": self.open_run,
            "plannable": len(self.planned()),
        }


# ---------------------------------------------------------------------------------------- the resolver


async def _read(step: Awaitable[T]) -> tuple[T | None, str | None]:
    """A broker read: its value, or None and the reason (a broker error is a reason, not a crash)."""
    try:
        return await step, None
    except BrokerError as exc:
        return None, _why(exc)


class Resolver:
    """Resolves one strategy for one user (see the module docstring); no state between calls."""

    def __init__(
        self,
        database: Database,
        client_for: Callable[[AccountInfo], tuple[OpenAlgoClient | None, str | None]],
        clock: Clock,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self.database = database
        self.client_for = client_for
        self.clock = clock
        self.calendar = calendar or default_calendar()

    async def resolve(self, user_id: int, strategy_id: int) -> Resolution:
        """Resolve ``strategy_id`` of ``user_id`` now. Never raises for a market or account condition:
        every failure is a reason on the result (database errors propagate, the command is retried)."""
        now = self.clock.now()
        snap = await asyncio.to_thread(load_snapshot, self.database, user_id, strategy_id, to_ist(now).date())
        res = Resolution(strategy_id, snap.name, now, snap.product, open_run=snap.open_run)
        res.errors += snap.errors
        res.warnings += snap.warnings
        if snap.open_run is not None:
            res.warnings.append(
                f"run #{snap.open_run} of this strategy is open: Execute is refused until it closes"
            )
        ist = to_ist(now)
        if snap.square_off is not None and ist.time() >= snap.square_off:
            res.errors.append(f"past the strategy's square-off time ({snap.square_off:%H:%M} IST)")
        if not snap.legs or not snap.selected or "strategy not found" in snap.errors:
            return res
        res.legs = [LegResult(leg) for leg in snap.legs]
        clients = self._accounts(snap, res)
        feed = await self._feed(snap, clients)
        if feed is None:
            res.errors.append("no healthy account to read market data from (the feed account)")
            return res
        res.feed, feed_client = feed
        await self._resolve_legs(snap, res, feed_client, now)
        await self._size(snap, res, clients, now)
        return res

    # ----------------------------------------------------------------------------------- accounts

    def _accounts(self, snap: _Snapshot, res: Resolution) -> dict[int, OpenAlgoClient]:
        """Every selected account's result row; the clients of those that may trade."""
        clients: dict[int, OpenAlgoClient] = {}
        for account_id, account, _ in snap.selected:
            if account is None:
                res.accounts.append(
                    AccountResult(
                        account_id, f"#{account_id}", "the account is not yours or no longer exists"
                    )
                )
                continue
            row = AccountResult(account.id, account.name)
            res.accounts.append(row)
            if account.archived:
                row.reason = "the account is archived"
            elif not account.is_active:
                row.reason = "the account is inactive"
            elif account.status == "auth_failed":
                row.reason = "the account's API key was refused by the broker; fix the key first"
            elif account.halted:
                row.reason = f"entries on this account are halted: {account.halted}"
            else:
                client, why = self.client_for(account.info)
                if client is None:
                    row.reason = why
                else:
                    clients[account.id] = client
        return clients

    async def _feed(
        self, snap: _Snapshot, clients: dict[int, OpenAlgoClient]
    ) -> tuple[_Account, OpenAlgoClient] | None:
        """The feed account: the primary when healthy, else the first healthy selected account."""
        candidates = [snap.primary] if snap.primary is not None else []
        candidates += [a for _, a, _ in snap.selected if a is not None]
        for account in candidates:
            if account is None or account.archived or not account.is_active or account.halted is not None:
                continue
            if account.status != "connected":
                continue
            client = clients.get(account.id)
            if client is None:
                client, _ = self.client_for(account.info)
            if client is not None:
                return account, client
        return None

    # --------------------------------------------------------------------------------------- legs

    async def _resolve_legs(
        self, snap: _Snapshot, res: Resolution, client: OpenAlgoClient, now: datetime
    ) -> None:
        today = to_ist(now).date()
        for r in res.legs:
            leg = r.leg
            if leg.product_type == "equity":
                r.error = "equity legs are not supported by Execute"
            elif leg.action not in ("BUY", "SELL"):
                r.error = "the leg has no action (BUY or SELL)"
            elif leg.product_type == "options" and leg.option_type not in ("CE", "PE"):
                r.error = "the leg has no option type (CE or PE)"
            else:
                try:
                    r.exchange = exchanges_for(leg.instrument).fo
                except DomainError as exc:
                    r.error = _why(exc)
        live = [r for r in res.legs if r.error is None]
        instruments = sorted({r.leg.instrument for r in live})
        # Spot: the index LTP, read once per instrument for this run.
        for name in instruments:
            quote, why = await _read(client.quotes(name, exchanges_for(name).spot))
            if quote is None or quote.ltp is None or quote.ltp <= 0:
                res.instrument_errors[name] = f"could not read the {name} spot: {why or 'no LTP'}"
            else:
                res.spot[name] = quote.ltp
                res.atm[name] = atm_strike(quote.ltp, underlying_spec(name).strike_step)
        # Expiry lists, once per (instrument, options|futures).
        lists: dict[tuple[str, str], tuple[tuple[date, ...] | None, str | None]] = {}
        for r in live:
            kind = "futures" if r.leg.product_type == "futures" else "options"
            key = (r.leg.instrument, kind)
            if key not in lists:
                lists[key] = await _read(
                    client.expiry(r.leg.instrument, exchanges_for(r.leg.instrument).fo, kind)
                )
            listed, why = lists[key]
            if listed is None:
                r.error = f"could not resolve expiry: {why}"
                continue
            try:
                r.expiry = resolve_expiry(r.leg.expiry, kind, listed, now)
            except (DomainError, ValueError) as exc:
                r.error = _why(exc) if "expiry" in str(exc) else f"could not resolve expiry: {_why(exc)}"
        chains: dict[tuple[str, date], tuple[OptionChain | None, str | None]] = {}
        for r in res.legs:
            if r.error is not None or r.expiry is None:
                continue
            await self._strike_and_symbol(r, res, client, chains)
            if r.error is None and r.symbol is not None:
                self._size_of(r, snap, chains, today)
        await self._ltps(res, client)
        self._leg_checks(snap, res, now)

    async def _strike_and_symbol(
        self,
        r: LegResult,
        res: Resolution,
        client: OpenAlgoClient,
        chains: dict[tuple[str, date], tuple[OptionChain | None, str | None]],
    ) -> None:
        leg, expiry = r.leg, r.expiry
        assert expiry is not None
        if leg.product_type == "futures":
            r.symbol = future_symbol(leg.instrument, expiry)
            return
        spot = res.spot.get(leg.instrument)
        if spot is None:
            r.error = res.instrument_errors.get(leg.instrument, "no spot")
            return
        key = (leg.instrument, expiry)
        if key not in chains:
            chains[key] = await _read(
                client.option_chain(
                    underlying=leg.instrument, exchange=exchanges_for(leg.instrument).spot, expiry_date=expiry
                )
            )
        chain, why = chains[key]
        if chain is None:
            r.error = f"could not read the option chain of {expiry:%d %b %Y}: {why}"
            return
        listed = sorted({_plain(row.strike) for row in chain.chain})
        step = underlying_spec(leg.instrument).strike_step
        option_type = leg.option_type or ""
        try:
            atm = atm_for(spot, step, listed)
            if leg.selection == "premium_near":
                await self._premium_near(r, client, listed, atm, step)
            else:
                r.strike = pick_strike(
                    leg.selection,
                    option_type=option_type,
                    offset=leg.offset,
                    strike_price=leg.strike_price,
                    listed=listed,
                    atm=atm,
                )
        except (DomainError, ValueError) as exc:
            r.error = _why(exc)
            return
        if r.strike is not None:
            r.symbol = option_symbol(leg.instrument, expiry, r.strike, option_type)

    async def _premium_near(
        self, r: LegResult, client: OpenAlgoClient, listed: list[Decimal], atm: Decimal, step: Decimal
    ) -> None:
        leg, expiry = r.leg, r.expiry
        assert expiry is not None
        if leg.premium is None or leg.premium <= 0:
            r.error = "premium_near needs a premium value"
            return
        option_type = leg.option_type or ""
        exchange = r.exchange or ""
        scan = premium_scan_strikes(listed, atm, step)
        symbols = {option_symbol(leg.instrument, expiry, s, option_type): s for s in scan}
        items, why = await _read(client.multiquotes([(s, exchange) for s in symbols]))
        if items is None:
            r.error = f"could not price the premium scan: {why}"
            return
        quotes: dict[Decimal, Decimal | None] = {
            symbols[i.symbol]: (i.quote.ltp if i.quote is not None else None)
            for i in items
            if i.symbol in symbols
        }
        pick = select_premium_near(leg.premium, quotes, atm)
        r.strike, r.ltp = pick.strike, pick.ltp
        if pick.warning:
            r.warnings.append(
                f"premium {format_inr(pick.ltp)} is {pick.deviation * 100:.1f}% from the target "
                f"{format_inr(leg.premium)}"
            )

    def _size_of(
        self,
        r: LegResult,
        snap: _Snapshot,
        chains: dict[tuple[str, date], tuple[OptionChain | None, str | None]],
        today: date,
    ) -> None:
        leg, expiry = r.leg, r.expiry
        assert expiry is not None
        chain_lot = None
        chain, _ = chains.get((leg.instrument, expiry), (None, None))
        if chain is not None:
            for row in chain.chain:
                side = row.ce if leg.option_type == "CE" else row.pe
                if _plain(row.strike) == r.strike and side is not None:
                    chain_lot = side.lotsize
        setting = snap.settings.get(leg.instrument)
        try:
            size = contract_size(
                leg.instrument,
                expiry,
                today,
                next_month=leg.expiry == "next_month",
                chain_lot=chain_lot,
                settings_lot=setting.lot if setting else None,
                settings_next_lot=setting.next_lot if setting else None,
                settings_freeze=setting.freeze if setting else None,
            )
        except ValueError as exc:
            r.error = _why(exc)
            return
        r.lot_size, r.freeze = size.lot_size, size.freeze
        if size.warning:
            r.warnings.append(size.warning)

    async def _ltps(self, res: Resolution, client: OpenAlgoClient) -> None:
        """One batch quote for the LTP of every resolved symbol still without one."""
        wanted = sorted({(r.symbol, r.exchange) for r in res.legs if r.ok and r.ltp is None and r.exchange})
        pairs = [(s, e) for s, e in wanted if s and e]
        if not pairs:
            return
        items, why = await _read(client.multiquotes(pairs))
        got = {} if items is None else {(i.symbol, i.exchange): i.quote for i in items}
        for r in res.legs:
            if r.ok and r.ltp is None:
                quote = got.get((r.symbol or "", r.exchange or ""))
                if quote is not None and quote.ltp is not None and quote.ltp > 0:
                    r.ltp = quote.ltp
                else:
                    r.warnings.append(f"no LTP for {r.symbol}" + (f": {why}" if why else ""))

    def _leg_checks(self, snap: _Snapshot, res: Resolution, now: datetime) -> None:
        """Session per leg's exchange, naked shorts, the market-condition day."""
        ist = to_ist(now)
        for r in res.legs:
            if r.error is not None or r.exchange is None:
                continue
            if not self.calendar.is_open(r.exchange, now):
                r.blocked = f"{r.exchange} is not in session now ({ist:%H:%M} IST)"
            elif r.leg.product_type == "options" and ist.time() < OPTIONS_OPEN:
                r.blocked = f"options are not sent before {OPTIONS_OPEN:%H:%M} IST"
        shapes = [LegShape(r.leg.number, r.leg.instrument, r.leg.action, r.leg.kind) for r in res.legs]
        for r in res.legs:
            if r.leg.number in naked_shorts(shapes):
                r.warnings.append(f"naked short: no BUY {r.leg.kind} hedges this SELL leg")
        expiries = {r.expiry for r in res.legs if r.expiry is not None}
        today = ist.date()
        if snap.market_condition == "expiry" and expiries and today not in expiries:
            res.warnings.append("this strategy is meant for expiry days; today is not its contract's expiry")
        if snap.market_condition == "non_expiry" and today in expiries:
            res.warnings.append("this strategy is meant for non-expiry days; today is its contract's expiry")

    # ------------------------------------------------------------------------------------- sizing

    async def _size(
        self, snap: _Snapshot, res: Resolution, clients: dict[int, OpenAlgoClient], now: datetime
    ) -> None:
        today = to_ist(now).date()
        usable = [a for a in res.accounts if a.reason is None and a.account_id in clients]
        reads = await asyncio.gather(*(_read(clients[a.account_id].funds()) for a in usable))
        accounts = {a.id: a for _, a, _ in snap.selected if a is not None}
        for row, (funds, why) in zip(usable, reads, strict=True):
            if funds is None:
                row.reason = f"funds unavailable: {why}"
                continue
            row.funds = AccountFunds(
                funds.availablecash, funds.collateral, accounts[row.account_id].collateral_included
            )
            held = snap.reserved.get(row.account_id, Decimal(0))
            if held > 0:
                # Another run's entry is going into this account: its margin is not in these funds yet.
                row.funds = funds_left(row.funds, held)
                row.warnings.append(f"{format_inr(held)} reserved by runs still entering on this account")
            try:
                row.available = seller_base(row.funds)
            except FundsUnavailable as exc:
                row.reason = f"funds unavailable: {_why(exc)}"
        resolved = [r for r in res.legs if r.ok]
        sizing_legs = [
            SizingLeg(
                index=r.leg.number,
                instrument=r.leg.instrument,
                action="BUY" if r.leg.action == "BUY" else "SELL",
                kind="FUT" if r.leg.kind == "FUT" else ("CE" if r.leg.kind == "CE" else "PE"),
                lot_size=r.lot_size or 1,
                lots=r.leg.lots,
                expiry_day=r.expiry == today,
                premium_per_lot=r.ltp * (r.lot_size or 1) if r.ltp else None,
            )
            for r in resolved
        ]
        funded = [a for a in res.accounts if a.reason is None]
        sizes: dict[int, tuple[LegSize, ...]] = {}
        if sizing_legs and funded:
            try:
                sizes = self._sizes(snap, sizing_legs, funded, accounts)
            except ExecuteRefused as exc:
                res.errors.append(_why(exc))
            except DomainError as exc:
                res.errors.append(f"sizing failed: {_why(exc)}")
        self._cells(snap, res, sizes, today)

    def _sizes(
        self,
        snap: _Snapshot,
        legs: list[SizingLeg],
        funded: list[AccountResult],
        accounts: dict[int, _Account],
    ) -> dict[int, tuple[LegSize, ...]]:
        grade = resolve_grade(snap.risk_profile, snap.grades)
        if grade is None:
            multipliers = {a_id: m for a_id, _, m in snap.selected}
            shares = [
                AccountShare(
                    a.account_id,
                    multipliers.get(a.account_id) or accounts[a.account_id].multiplier,
                    a.available,
                    accounts[a.account_id].max_lots,
                )
                for a in funded
            ]
            return size_fixed(legs, snap.allocation, shares)  # type: ignore[arg-type]
        out: dict[int, tuple[LegSize, ...]] = {}
        for a in funded:
            assert a.funds is not None
            try:
                out[a.account_id] = size_account(
                    legs, grade, a.funds, snap.margins, max_lots_per_leg=accounts[a.account_id].max_lots
                ).legs
            except FundsUnavailable as exc:
                a.reason = f"funds unavailable: {_why(exc)}"
        return out

    def _cells(
        self, snap: _Snapshot, res: Resolution, sizes: dict[int, tuple[LegSize, ...]], today: date
    ) -> None:
        """Every leg × account cell, then the account rules: a short is never planned without the BUY
        legs that hedge it; under ``unwind`` a leg that cannot be placed skips the whole account (the
        entry would unwind it anyway); the estimated margin must fit the seller base."""
        numbers = {r.leg.id: r.leg.number for r in res.legs}
        for account in res.accounts:
            own = {s.index: s for s in sizes.get(account.account_id, ())}
            cells: list[Cell] = []
            sized: dict[int, SizedLeg] = {}
            for r in res.legs:
                cell = Cell(r.leg.id, account.account_id)
                cells.append(cell)
                size = own.get(r.leg.number)
                if r.error is not None:
                    cell.status, cell.reason = "failed", r.error
                    continue
                if size is not None and r.lot_size is not None:
                    cell.lots, cell.quantity = size.lots, size.quantity
                    if size.lots > 0:
                        cell.slices = (
                            freeze_slices(size.quantity, r.freeze, r.lot_size)
                            if r.freeze
                            else [size.quantity]
                        )
                    shape = LegShape(r.leg.number, r.leg.instrument, r.leg.action, r.leg.kind)
                    sized[r.leg.id] = SizedLeg(shape, size.lots, r.lot_size, r.ltp, r.expiry == today)
                if r.blocked is not None:
                    cell.status, cell.reason = "failed", r.blocked
                elif size is None or size.lots == 0:
                    cell.status = "skipped"
                    cell.reason = (size.reason if size is not None else None) or "no lots for this account"
                elif size.reason:
                    account.warnings.append(f"leg {r.leg.number}: {size.reason}")
            if account.reason is None:
                self._unhedged(res, cells, numbers)
                failed = [c for c in cells if c.status == "failed"]
                if failed and snap.on_leg_failure == "unwind":
                    first = failed[0]
                    account.reason = (
                        f"leg {numbers[first.leg_id]} cannot be placed ({first.reason}); "
                        "the strategy unwinds an account on a failed leg"
                    )
            placed = [sized[c.leg_id] for c in cells if c.status == "ok" and c.leg_id in sized]
            margins = estimate_margins(
                placed if account.reason is None else list(sized.values()), snap.margins
            )
            for cell in cells:
                cell.margin = margins.get(numbers[cell.leg_id])
            known = [m for m in margins.values() if m is not None]
            account.margin = sum(known, Decimal(0)) if known else None
            if len(known) < len(margins):
                account.warnings.append("no margin row for an instrument: its margin is not estimated")
            if (
                account.reason is None
                and account.margin is not None
                and account.available is not None
                and account.margin > account.available
            ):
                account.reason = (
                    f"insufficient margin: needs {format_inr(account.margin)}, "
                    f"{format_inr(account.available)} available"
                )
            if account.reason is None:
                bad = [c for c in cells if c.status != "ok"]
                if bad and len(bad) == len(cells):
                    account.reason = f"nothing to place: leg {numbers[bad[0].leg_id]}: {bad[0].reason}"
                for c in bad:
                    account.warnings.append(f"leg {numbers[c.leg_id]} not placed: {c.reason}")
            if account.reason is not None:
                for cell in cells:
                    if cell.status == "ok":
                        cell.status, cell.reason = "skipped", account.reason
            res.cells += cells

    @staticmethod
    def _unhedged(res: Resolution, cells: list[Cell], numbers: dict[int, int]) -> None:
        """Skip the SELL option cells whose same-type BUY legs are not all placed on this account."""
        by_leg = {c.leg_id: c for c in cells}
        legs = {r.leg.id: r.leg for r in res.legs}
        for cell in cells:
            leg = legs[cell.leg_id]
            if cell.status != "ok" or leg.action != "SELL" or leg.kind == "FUT":
                continue
            hedges = [
                other
                for other in legs.values()
                if other.action == "BUY" and other.kind == leg.kind and other.instrument == leg.instrument
            ]
            missing = [h for h in hedges if by_leg[h.id].status != "ok"]
            if missing:
                cell.status = "skipped"
                cell.reason = f"its hedge (leg {numbers[missing[0].id]}) is not placed on this account"


# ----------------------------------------------------------------------------------------- the component


class _KindRunner(EntryExecutor):
    """The entry executor's command machinery for one resolution kind (see :class:`StrategyResolver`)."""

    def __init__(self, owner: StrategyResolver, kind: str, **options: Any) -> None:
        super().__init__(**options)
        self.kind = kind
        self.name = f"resolution:{kind}"
        self.recover_note = "the engine stopped while resolving this strategy; it is resolved again"
        self._owner = owner

    async def perform(self, user_id: int, payload: dict[str, Any]) -> ExecuteOutcome:
        strategy_id = payload.get("strategy_id")
        if not isinstance(strategy_id, int) or isinstance(strategy_id, bool):
            raise ExecutionError(f"malformed {self.kind} payload (strategy_id)")
        self.registry.set_host_policy(await asyncio.to_thread(self._policy))
        resolver = Resolver(self.database, self.client_for, self.market_clock, self._owner.calendar)
        if self.kind == PREVIEW_STRATEGY:
            resolution = await resolver.resolve(user_id, strategy_id)
            return ExecuteOutcome("done", {"preview": resolution.to_json()})
        # One Execute of a user at a time from its funds read to its plan's commit: the next one reads
        # the margin the first reserved, so two Executes at the same instant (a schedule's, a double
        # start) never size against the same cash. One engine runs (its lock), so an in-process lock
        # covers every writer of reservations.
        async with self._owner.sizing_lock(user_id):
            resolution = await resolver.resolve(user_id, strategy_id)
            return await asyncio.to_thread(self._owner.plan, self._command_id(), user_id, resolution)

    def _policy(self) -> Any:
        with self.database.session_factory() as session:
            return load_host_policy(session)

    async def run_command(self, command_id: int) -> bool:
        # perform() needs its command's id for the run's token: kept per task.
        token = _CURRENT.set(command_id)
        try:
            return await super().run_command(command_id)
        finally:
            _CURRENT.reset(token)

    def _command_id(self) -> int:
        return _CURRENT.get()


class StrategyResolver:
    """The engine component for ``preview_strategy`` and ``execute_strategy`` commands (module
    docstring). ``registry``/``decrypt``/``epoch`` as for :class:`~algomirror.engine.execution.
    EntryExecutor`; ``clock`` judges market sessions and square-off (the demo passes its market clock)."""

    name = "resolution"

    def __init__(
        self,
        database: Database,
        registry: ClientRegistry,
        decrypt: Callable[[str], str],
        *,
        epoch: int | Callable[[], int | None],
        clock: Clock | None = None,
        config: ExecutionConfig | None = None,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self.database = database
        self.calendar = calendar or default_calendar()
        options: dict[str, Any] = {
            "database": database,
            "registry": registry,
            "decrypt": decrypt,
            "epoch": epoch,
            # Command rows on the real clock (like every command); the run and its sessions on ``clock``.
            "market_clock": clock,
            "config": config or ExecutionConfig(max_attempts=3),
        }
        self._sizing_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.preview = _KindRunner(self, PREVIEW_STRATEGY, **options)
        self.execute = _KindRunner(self, EXECUTE_STRATEGY, **options)
        self.clock = self.preview.market_clock
        self.command_clock = self.preview.clock

    def sizing_lock(self, user_id: int) -> asyncio.Lock:
        """The lock an Execute of ``user_id`` holds from its resolution to its plan's commit."""
        return self._sizing_locks[user_id]

    async def run(self, stop: asyncio.Event) -> None:
        """Both kinds' loops until ``stop`` (each recovers its ``running`` rows first)."""
        # One task group: a fenced-out runner stops the other too (the service sees the group's error).
        async with asyncio.TaskGroup() as group:
            group.create_task(self.preview.run(stop), name="resolution:preview")
            group.create_task(self.execute.run(stop), name="resolution:execute")

    def recover(self) -> int:
        """Return both kinds' ``running`` rows (a dead engine's) to ``pending``."""
        return self.preview.recover() + self.execute.recover()

    async def process_once(self) -> int:
        """Claim and run every due command of both kinds now (tests)."""
        counts = await asyncio.gather(self.preview.process_once(), self.execute.process_once())
        return sum(counts)

    async def run_command(self, command_id: int) -> bool:
        """Run one command of either kind (False when it was not pending)."""
        return await self.preview.run_command(command_id) or await self.execute.run_command(command_id)

    def plan(self, command_id: int, user_id: int, resolution: Resolution) -> ExecuteOutcome:
        """Plan the run, queue its ``execute_run`` and finish command ``command_id``, in ONE transaction;
        or the failed outcome with every reason."""
        preview = resolution.to_json()
        if resolution.open_run is not None:
            resolution.errors.insert(0, f"the strategy already has an open run (#{resolution.open_run})")
        planned = resolution.planned()
        if resolution.errors or not planned:
            reasons = resolution.reasons() or ["nothing could be planned"]
            error = "; ".join(reasons)[:MAX_ERROR]
            failure = {"error": error, "reasons": reasons, "preview": preview}
            return ExecuteOutcome("failed", failure, error=error)
        now = self.clock.now()
        ended = self.command_clock.now()
        try:
            with self.database.session() as session:
                # In the plan's transaction: the open-run index only covers an Execute whose run is
                # still open; this covers one queued while an earlier Execute was still in flight.
                earlier = execute_in_flight(session, command_id, user_id, resolution.strategy_id)
                if earlier is not None:
                    raise _Busy(earlier)
                run = plan_run(
                    session, resolution.strategy_id, planned, now=now, skipped=resolution.skipped()
                )
                run.spot = {name: _text(value) for name, value in resolution.spot.items()}
                run.atm = {name: _text(value) for name, value in resolution.atm.items()}
                warnings = resolution.warnings + [
                    f"leg {r.leg.number}: {w}" for r in resolution.legs for w in r.warnings
                ]
                # Legs skipped on one account (0 lots, an unplaced hedge) while the rest of it is planned.
                warnings += [
                    f"{a.name}: {w}" for a in resolution.accounts if a.reason is None for w in a.warnings
                ]
                if warnings:
                    run.result = {**(run.result or {}), "warnings": warnings}
                reserve_margins(session, resolution, planned, run.id, now)
                request_execute(session, user_id=user_id, run_id=run.id, token=f"run-of:{command_id}")
                result = {"run_id": run.id, "planned": len(planned), "skipped": len(resolution.skipped())}
                won = session.execute(
                    update(EngineCommand)
                    .where(EngineCommand.id == command_id, EngineCommand.status == "running")
                    .values(status="done", result=result, error=None, finished_at=ended, updated_at=ended)
                    .execution_options(synchronize_session=False)
                )
                if getattr(won, "rowcount", 0) != 1:
                    raise _Lost
                run_id = run.id
        except _Lost:
            return ExecuteOutcome("failed", error="the command was no longer running; nothing planned")
        except _Busy as busy:
            reason = (
                f"another Execute of this strategy (command #{busy.command_id}) was still in progress "
                "when this one was requested; nothing planned"
            )
            return ExecuteOutcome("failed", {"error": reason, "reasons": [reason]}, error=reason)
        except IntegrityError:
            # The schema refuses a second open run of one strategy (another Execute won the race).
            reason = "the strategy already has an open run"
            return ExecuteOutcome("failed", {"error": reason, "reasons": [reason]}, error=reason)
        return ExecuteOutcome("done", {**result, "run_id": run_id})


def reserve_margins(
    session: Session, resolution: Resolution, planned: list[PlannedExecution], run_id: int, now: datetime
) -> None:
    """Reserve each planned account's estimated margin (₹) for run ``run_id`` on its margin tracker, in
    the plan's transaction: an Execute of another strategy sizes against the rest until a funds read
    after this run's entry holds it (PRODUCT §9.5; :mod:`~algomirror.domain.reservations`)."""
    accounts = {p.account_id for p in planned}
    amounts = {
        a.account_id: a.margin
        for a in resolution.accounts
        if a.reason is None and a.account_id in accounts and a.margin is not None and a.margin > 0
    }
    if not amounts:
        return
    trackers = {
        t.account_id: t
        for t in session.scalars(select(MarginTracker).where(MarginTracker.account_id.in_(list(amounts))))
    }
    for account_id, amount in sorted(amounts.items()):
        tracker = trackers.get(account_id)
        if tracker is None:
            tracker = MarginTracker(account_id=account_id, update_count=0)
            session.add(tracker)
        tracker.allocated_margins = reserve(tracker.allocated_margins, run_id, amount, now)
        if tracker.total_available_margin is not None:
            tracker.free_margin = tracker.total_available_margin - reserved(tracker.allocated_margins)


class _Lost(Exception):
    """The command stopped being ``running`` before its plan committed (nothing is written)."""


class _Busy(Exception):
    """An earlier ``execute_strategy`` of the strategy was in flight: this one plans nothing."""

    def __init__(self, command_id: int) -> None:
        super().__init__(command_id)
        self.command_id = command_id


IN_FLIGHT_SCANNED = 200  # earlier execute_strategy commands of the user looked at (newest first)


def execute_in_flight(session: Session, command_id: int, user_id: int, strategy_id: int) -> int | None:
    """The id of an earlier ``execute_strategy`` of ``strategy_id`` (same user) that was still in flight
    when command ``command_id`` was queued, else None: one ``pending`` or ``running`` now, or one ``done``
    whose plan (its ``execute_run``, token ``run-of:<id>``) was queued after ``command_id`` (it planned
    while this one waited). Ids grow with insertion, so no clock is compared. Such a command must not
    plan: a second click while the first was resolving, whose first run may already be closed (all
    rejected), would otherwise place a second set of orders."""
    earlier = session.scalars(
        select(EngineCommand)
        .where(
            EngineCommand.kind == EXECUTE_STRATEGY,
            EngineCommand.user_id == user_id,
            EngineCommand.id < command_id,
            EngineCommand.status.in_(("pending", "running", "done")),
        )
        .order_by(EngineCommand.id.desc())
        .limit(IN_FLIGHT_SCANNED)
    ).all()
    mine = [c for c in earlier if (c.payload or {}).get("strategy_id") == strategy_id]
    for command in mine:
        if command.status in ("pending", "running"):
            return command.id
    done = {f"run-of:{c.id}": c.id for c in mine if c.status == "done"}
    if done:
        later = session.scalar(
            select(EngineCommand.token)
            .where(EngineCommand.token.in_(list(done)), EngineCommand.id > command_id)
            .limit(1)
        )
        if later is not None:
            return done[later]
    return None


__all__ = [
    "EXECUTE_STRATEGY",
    "PREVIEW_STRATEGY",
    "RESOLUTION_KINDS",
    "Resolution",
    "Resolver",
    "StrategyResolver",
    "execute_in_flight",
    "load_snapshot",
]
