"""Restart recovery and reconciliation (PRODUCT §6.8, DESIGN §3): each account's broker books compared
with what our executions and journal believe.

When it runs: once when the engine starts (alongside the executors, which resume their own commands),
then every ``interval`` seconds while NSE/NFO is open on the injected market clock.

Which accounts: every active account with a key that has ``active``/``exiting``/``error``
executions or intents still working (``sent``, ``acknowledged``, ``unknown``). For each, in this order:
our state is read (one short transaction), the positionbook and the orderbook are read through the
engine's :class:`~algomirror.broker.registry.ClientRegistry` at READ priority, and our state is read
again. When the two reads of our state differ, an executor moved meanwhile: the pass is retried once,
then left to the next one (``busy``), so a fill arriving during the comparison is never taken for a gap.

Per (symbol, exchange, product) the broker's net quantity is compared with *ours*: Σ signed open
quantity (BUY +, SELL −; open = filled − exited) of our ``active``/``exiting``/``error`` executions on
the account (every strategy; an ``error`` leg's position is still ours). The journal gives the range of
what could explain a difference: every intent of the account's ``pending``/``active``/``exiting``/``error``
executions, and every still-working intent, contributes its signed filled quantity, and a working one
also anything up to its remaining quantity. Tagged working orders (strategy ``AM-S*``) are compared with
our working intents (by order id, or, for an intent whose send outcome is not known yet, by symbol, side
and tag).

Outcomes (:class:`AccountReconciliation`):

* ``unverified``: a read failed or was malformed (a row without a readable quantity). Nothing changes
  and nothing halts; an open ``info`` alert of kind ``reconciliation`` titled "<account>: positions not
  verified" shows it on the dashboard. A later pass that verifies the account acknowledges that marker
  itself (``acknowledged_by`` empty) — the only thing this component ever clears.
* ``verified``: every key matches (or is explained, see next).
* ``explained``: a difference inside the journal's range (the engine died after a fill it had not yet
  recorded, an exit still working): left to the executors, which resume their commands; only noted.
* ``mismatch``: anything else — our open position smaller or missing at the broker (``critical``: closed
  outside), extra broker quantity on a key we hold or trade (``warning``: manual trades), or a tagged
  working order no intent of ours owns (``warning``). New entries on the account are halted
  (:func:`~algomirror.engine.halts.halt_account_entries`) and an alert names the gap. Executions and
  quantities are never changed: extra broker quantity is shown, never adopted. The same gap (same
  title) acknowledged by a person today (IST) is not raised or halted again; a different gap is.

Broker positions on keys where we hold nothing and have no intent are not ours to judge (the user may
trade by hand on the account): they are listed on the result (``untracked``), never alerted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import BrokerError
from algomirror.broker.registry import ClientRegistry
from algomirror.broker.wire import Orderbook, Positionbook
from algomirror.db.models import (
    EngineAlert,
    OrderIntent,
    StrategyExecution,
    StrategyLeg,
    TradingAccount,
)
from algomirror.db.session import Database
from algomirror.domain import order_state
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.timeutil import Clock, SystemClock, ist_combine, ist_today
from algomirror.engine.alerts import raise_alert
from algomirror.engine.halts import halt_account_entries
from algomirror.host_settings import load_host_policy

log = logging.getLogger(__name__)

ALERT_KIND = "reconciliation"
TAG_PREFIX = "AM-S"
# An ``error`` leg is one whose exit (or unwind) could not be completed: its position is ours and may
# still be open, so it counts like an active one (a person retries it or confirms it closed outside).
OPEN_STATUSES = ("active", "exiting", "error")
# Executions whose intents can still move the broker's position (their journal is the evidence).
LIVE_STATUSES = ("pending", "active", "exiting", "error")
WORKING_INTENT_STATES = (order_state.SENT, order_state.ACKNOWLEDGED, order_state.UNKNOWN)
MARKET_EXCHANGES = ("NFO", "NSE")

Key = tuple[str, str, str]  # (symbol, exchange, product), upper-cased


def unverified_title(account_name: str) -> str:
    """The title of an account's "not verified" marker alert."""
    return f"{account_name}: positions not verified"


@dataclass(frozen=True, slots=True)
class Gap:
    """One key where the broker and we disagree. Quantities are signed units."""

    symbol: str
    exchange: str
    product: str
    ours: int
    broker: int
    low: int
    high: int

    @property
    def explained(self) -> bool:
        """The broker's quantity is within what our journal can account for."""
        return self.low <= self.broker <= self.high

    @property
    def missing(self) -> bool:
        """Our open position is smaller (or gone, or reversed) at the broker: closed outside."""
        if self.ours == 0:
            return False
        return self.broker * self.ours <= 0 or abs(self.broker) < abs(self.ours)

    def describe(self) -> str:
        return f"{self.symbol} {self.exchange} {self.product}: ours {self.ours:+d}, broker {self.broker:+d}"


@dataclass(frozen=True, slots=True)
class StrayOrder:
    """A working order tagged AM-S* that no working intent of ours owns."""

    orderid: str
    symbol: str
    exchange: str
    product: str
    action: str
    quantity: int | None
    strategy: str

    def describe(self) -> str:
        size = "?" if self.quantity is None else str(self.quantity)
        return f"order {self.orderid} {self.action} {size} {self.symbol} {self.product} ({self.strategy})"


@dataclass
class AccountReconciliation:
    """The outcome of one account's pass. ``outcome``: ``verified``, ``explained``, ``mismatch``,
    ``unverified``, ``busy`` (our state moved during the pass; left to the next) or ``skipped``."""

    account_id: int
    outcome: str
    reason: str | None = None
    gaps: list[Gap] = field(default_factory=list)
    stray_orders: list[StrayOrder] = field(default_factory=list)
    untracked: dict[Key, int] = field(default_factory=dict)
    halted: bool = False
    alert_ids: list[int] = field(default_factory=list)

    @property
    def unexplained(self) -> list[Gap]:
        return [g for g in self.gaps if not g.explained]


@dataclass(frozen=True, slots=True)
class _Account:
    id: int
    user_id: int
    name: str
    host_url: str
    api_key_encrypted: str


@dataclass(frozen=True, slots=True)
class _Intent:
    id: int
    execution_id: int | None
    key: Key
    side: str
    quantity: int
    filled: int
    state: str
    order_id: str | None
    tag: str | None

    @property
    def working(self) -> bool:
        return self.state in WORKING_INTENT_STATES


@dataclass(frozen=True, slots=True)
class _Ours:
    """Our side of one account: recorded open quantity per key, and the journal's intents."""

    recorded: dict[Key, int]
    intents: tuple[_Intent, ...]
    # Everything an executor writes while it works, to notice it moved during the broker reads.
    fingerprint: tuple[tuple[object, ...], ...]


def _key(symbol: str | None, exchange: str | None, product: str | None) -> Key:
    return ((symbol or "").upper(), (exchange or "").upper(), (product or "").upper())


def _sign(side: str | None) -> int:
    return 1 if (side or "").upper() == "BUY" else -1


def compare_positions(ours: _Ours, broker: dict[Key, int]) -> tuple[list[Gap], dict[Key, int]]:
    """Every key where ``broker`` differs from ``ours.recorded``, with the journal's range; and the
    broker's non-zero keys we have no interest in (untracked)."""
    low: dict[Key, int] = defaultdict(int)
    high: dict[Key, int] = defaultdict(int)
    for intent in ours.intents:
        signed = _sign(intent.side) * intent.filled
        low[intent.key] += signed
        high[intent.key] += signed
        if intent.working:
            rest = _sign(intent.side) * max(0, intent.quantity - intent.filled)
            low[intent.key] += min(0, rest)
            high[intent.key] += max(0, rest)
    interest = set(ours.recorded) | {i.key for i in ours.intents}
    gaps: list[Gap] = []
    for key in sorted(interest):
        mine = ours.recorded.get(key, 0)
        theirs = broker.get(key, 0)
        if mine == theirs:
            continue
        lo, hi = (low[key], high[key]) if key in low else (mine, mine)
        gaps.append(Gap(*key, ours=mine, broker=theirs, low=min(lo, mine), high=max(hi, mine)))
    untracked = {k: q for k, q in sorted(broker.items()) if q and k not in interest}
    return gaps, untracked


def stray_orders(ours: _Ours, book: Orderbook) -> list[StrayOrder]:
    """Working orders tagged ``AM-S*`` that no working intent of ours owns. An intent whose send outcome
    is unknown (no order id yet) may own one order of its symbol, side and tag: the executor adopts it."""
    owned = {i.order_id for i in ours.intents if i.working and i.order_id}
    unclaimed = [i for i in ours.intents if i.working and not i.order_id]
    strays: list[StrayOrder] = []
    for order in book.orders:
        tag = order.strategy or ""
        if not tag.startswith(TAG_PREFIX) or not order.status.is_working or order.orderid in owned:
            continue
        key = _key(order.symbol, order.exchange, order.product)
        match = next(
            (i for i in unclaimed if i.key == key and i.side == order.action and i.tag == tag),
            None,
        )
        if match is not None:
            unclaimed.remove(match)
            continue
        strays.append(StrayOrder(order.orderid, key[0], key[1], key[2], order.action, order.quantity, tag))
    return strays


class Reconciler:
    """The reconciliation component (see the module docstring).

    ``decrypt`` turns ``api_key_encrypted`` into the key (ValueError when it cannot). ``clock`` stamps
    alerts and halts; ``market_clock`` decides market hours (default: ``clock``); ``interval`` is the
    seconds between passes in market hours. Tests call :meth:`reconcile_all_once` or
    :meth:`reconcile_account`.
    """

    name = "reconciliation"

    def __init__(
        self,
        database: Database,
        registry: ClientRegistry,
        decrypt: Callable[[str], str],
        *,
        clock: Clock | None = None,
        market_clock: Clock | None = None,
        calendar: TradingCalendar | None = None,
        interval: float = 60.0,
        closed_poll: float = 60.0,
    ) -> None:
        self.database = database
        self.registry = registry
        self._decrypt = decrypt
        self.clock: Clock = clock or SystemClock()
        self.market_clock: Clock = market_clock or self.clock
        self.calendar = calendar or default_calendar()
        self.interval = interval
        self.closed_poll = closed_poll
        self.passes = 0
        # The last outcome per account, for diagnostics and tests.
        self.last: dict[int, AccountReconciliation] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """One pass at once (engine start), then one per ``interval`` while the market is open."""
        first = True
        while not stop.is_set():
            if first or self.market_open():
                try:
                    await self.reconcile_all_once()
                except SQLAlchemyError as exc:
                    # The database hiccuped: nothing was decided; the next pass tries again.
                    log.warning("reconciliation: database error: %s", str(exc).splitlines()[0])
            first = False
            wait = self.interval if self.market_open() else self.closed_poll
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    def market_open(self) -> bool:
        now = self.market_clock.now()
        return any(self.calendar.is_open(exchange, now) for exchange in MARKET_EXCHANGES)

    async def reconcile_all_once(self) -> list[AccountReconciliation]:
        """One pass over every account that needs one, accounts concurrently. Raises SQLAlchemyError."""
        ids = await asyncio.to_thread(self._accounts_to_check)
        results = list(await asyncio.gather(*(self.reconcile_account(i) for i in ids)))
        self.passes += 1
        return results

    async def reconcile_account(self, account_id: int) -> AccountReconciliation:
        """Compare one account's broker books with our state and act on the outcome (see the module
        docstring). Broker problems are outcomes, never raised; raises SQLAlchemyError."""
        account = await asyncio.to_thread(self._load_account, account_id)
        if account is None:
            return self._done(AccountReconciliation(account_id, "skipped", "inactive, deleted or no key"))
        try:
            client = self._client(account)
        except ValueError as exc:
            return self._done(await self._unverified(account, str(exc)))
        for _ in range(2):
            before = await asyncio.to_thread(self._load_ours, account_id)
            # Both reads run to their end (neither is left behind when the other fails).
            positions, orders = await asyncio.gather(
                client.positionbook(), client.orderbook(), return_exceptions=True
            )
            for name, outcome in (("positionbook", positions), ("orderbook", orders)):
                if isinstance(outcome, BrokerError):
                    return self._done(await self._unverified(account, f"{name}: {outcome.message}"))
                if isinstance(outcome, BaseException):
                    raise outcome
            assert isinstance(positions, Positionbook) and isinstance(orders, Orderbook)
            after = await asyncio.to_thread(self._load_ours, account_id)
            if before.fingerprint == after.fingerprint:
                break
        else:
            return self._done(
                AccountReconciliation(account_id, "busy", "orders moved during the comparison; next pass")
            )
        broker, malformed = self._net_positions(positions)
        if malformed:
            return self._done(await self._unverified(account, f"positionbook: {malformed}"))
        gaps, untracked = compare_positions(after, broker)
        strays = stray_orders(after, orders)
        result = AccountReconciliation(
            account_id, "verified", gaps=gaps, stray_orders=strays, untracked=untracked
        )
        if result.unexplained or strays:
            result.outcome = "mismatch"
        elif gaps:
            result.outcome = "explained"
            log.info(
                "reconciliation %s (%s): explained by our journal, left to the executors: %s",
                account.id,
                account.name,
                "; ".join(g.describe() for g in gaps),
            )
        await asyncio.to_thread(self._record, account, result)
        return self._done(result)

    def _done(self, result: AccountReconciliation) -> AccountReconciliation:
        self.last[result.account_id] = result
        return result

    @staticmethod
    def _net_positions(book: Positionbook) -> tuple[dict[Key, int], str | None]:
        net: dict[Key, int] = defaultdict(int)
        for row in book.positions:
            if row.quantity is None:
                return {}, f"no readable quantity for {row.symbol}"
            net[_key(row.symbol, row.exchange, row.product)] += row.quantity
        return dict(net), None

    def _client(self, account: _Account) -> OpenAlgoClient:
        """The account's shared client. Raises ValueError (a message safe to show) for a stored key
        that cannot be decrypted or an invalid host URL."""
        try:
            key = self._decrypt(account.api_key_encrypted)
        except ValueError:
            raise ValueError("the stored API key cannot be read; save the key again") from None
        try:
            return self.registry.client(account.id, account.host_url, key, name=account.name)
        except ValueError as exc:
            raise ValueError(f"the account's host URL is invalid: {exc}") from None

    # ------------------------------------------------------------------------------ database

    def _accounts_to_check(self) -> list[int]:
        with self.database.session_factory() as session:
            self.registry.set_host_policy(load_host_policy(session))
            held = select(StrategyExecution.account_id).where(StrategyExecution.status.in_(OPEN_STATUSES))
            working = select(OrderIntent.account_id).where(OrderIntent.state.in_(WORKING_INTENT_STATES))
            rows = session.scalars(
                select(TradingAccount.id)
                .where(
                    TradingAccount.is_active.is_(True),
                    TradingAccount.api_key_encrypted.is_not(None),
                    or_(TradingAccount.id.in_(held), TradingAccount.id.in_(working)),
                )
                .order_by(TradingAccount.id)
            ).all()
            return list(rows)

    def _load_account(self, account_id: int) -> _Account | None:
        with self.database.session_factory() as session:
            row = session.get(TradingAccount, account_id)
            if row is None or not row.is_active or not row.api_key_encrypted:
                return None
            return _Account(row.id, row.user_id, row.account_name, row.host_url, row.api_key_encrypted)

    def _load_ours(self, account_id: int) -> _Ours:
        with self.database.session_factory() as session:
            executions = session.execute(
                select(StrategyExecution, StrategyLeg.action)
                .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
                .where(
                    StrategyExecution.account_id == account_id,
                    StrategyExecution.status.in_(LIVE_STATUSES),
                )
                .order_by(StrategyExecution.id)
            ).all()
            recorded: dict[Key, int] = defaultdict(int)
            live_ids = []
            fingerprint: list[tuple[object, ...]] = []
            for execution, action in executions:
                live_ids.append(execution.id)
                fingerprint.append(
                    (
                        "e",
                        execution.id,
                        execution.status,
                        execution.filled_quantity,
                        execution.exited_quantity,
                    )
                )
                if execution.status in OPEN_STATUSES:
                    key = _key(execution.symbol, execution.exchange, execution.product)
                    recorded[key] += _sign(action) * (execution.filled_quantity - execution.exited_quantity)
            rows = session.scalars(
                select(OrderIntent)
                .where(
                    OrderIntent.account_id == account_id,
                    or_(
                        OrderIntent.execution_id.in_(live_ids),
                        OrderIntent.state.in_(WORKING_INTENT_STATES),
                    ),
                )
                .order_by(OrderIntent.id)
            ).all()
            intents = tuple(
                _Intent(
                    r.id,
                    r.execution_id,
                    _key(r.symbol, r.exchange, r.product),
                    r.side.upper(),
                    r.quantity,
                    r.filled_quantity,
                    r.state,
                    r.order_id,
                    r.strategy_tag,
                )
                for r in rows
            )
            fingerprint.extend(("i", i.id, i.state, i.filled, i.order_id) for i in intents)
            return _Ours(dict(recorded), intents, tuple(fingerprint))

    async def _unverified(self, account: _Account, reason: str) -> AccountReconciliation:
        log.warning("reconciliation %s (%s): not verified: %s", account.id, account.name, reason)
        result = AccountReconciliation(account.id, "unverified", reason)
        await asyncio.to_thread(self._record, account, result)
        return result

    def _record(self, account: _Account, result: AccountReconciliation) -> None:
        """Write what the outcome asks for (one transaction): the unverified marker raised or cleared,
        the mismatch's halt and alerts."""
        now = self.clock.now()
        with self.database.session() as session:
            marker = unverified_title(account.name)
            if result.outcome == "unverified":
                alert = raise_alert(
                    session,
                    user_id=account.user_id,
                    kind=ALERT_KIND,
                    severity="info",
                    title=marker,
                    details=(
                        f"The broker's books could not be read ({result.reason}). Nothing was changed "
                        "and entries go on; the next pass tries again."
                    ),
                    account_id=account.id,
                    now=now,
                )
                result.alert_ids.append(alert.id)
                return
            # Verified (a mismatch is a verified read too): our own marker goes, nothing else.
            session.execute(
                update(EngineAlert)
                .where(
                    EngineAlert.user_id == account.user_id,
                    EngineAlert.kind == ALERT_KIND,
                    EngineAlert.account_id == account.id,
                    EngineAlert.title == marker,
                    EngineAlert.acknowledged_at.is_(None),
                )
                .values(acknowledged_at=now)
            )
            if result.outcome != "mismatch":
                return
            problems: list[tuple[str, str, str]] = []  # severity, title, details
            for gap in result.unexplained:
                if gap.missing:
                    title = f"{account.name}: position missing at the broker: {gap.describe()}"
                    details = (
                        f"Our active executions hold {gap.ours:+d} of {gap.symbol} ({gap.product}) on "
                        f"{account.name}; the broker's positionbook shows {gap.broker:+d}. It may have been "
                        "closed outside AlgoMirror. Executions were not changed: retry the exit or close "
                        "them yourself once you have checked the broker."
                    )
                    problems.append(("critical", title, details))
                else:
                    title = f"{account.name}: extra quantity at the broker: {gap.describe()}"
                    details = (
                        f"The broker's positionbook shows {gap.broker:+d} of {gap.symbol} ({gap.product}) on "
                        f"{account.name}; our executions hold {gap.ours:+d}. The difference (manual trades?) "
                        "is shown, never adopted."
                    )
                    problems.append(("warning", title, details))
            for stray in result.stray_orders:
                title = f"{account.name}: working order not ours: {stray.describe()}"
                details = (
                    f"A working order tagged {stray.strategy} on {account.name} belongs to no working "
                    "intent of ours. It was left alone; cancel it at the broker if it is not wanted."
                )
                problems.append(("warning", title, details))
            since = ist_combine(ist_today(now), time(0, 0))
            fresh = [p for p in problems if not self._acknowledged_since(session, account, p[1], since)]
            if not fresh:
                return  # every gap was acknowledged by a person today: not raised (or halted) again
            for severity, title, details in fresh:
                alert = raise_alert(
                    session,
                    user_id=account.user_id,
                    kind=ALERT_KIND,
                    severity=severity,
                    title=title,
                    details=details,
                    account_id=account.id,
                    now=now,
                )
                result.alert_ids.append(alert.id)
            reason = "reconciliation: " + "; ".join(t.split(": ", 1)[1] for _, t, _ in fresh)
            halt_account_entries(session, account.id, reason, now)
            result.halted = True
            log.warning("reconciliation %s (%s): entries halted: %s", account.id, account.name, reason)

    @staticmethod
    def _acknowledged_since(session: Session, account: _Account, title: str, since: datetime) -> bool:
        """A person acknowledged this exact gap (same title) on the account since ``since``."""
        found = session.scalar(
            select(EngineAlert.id)
            .where(
                EngineAlert.user_id == account.user_id,
                EngineAlert.kind == ALERT_KIND,
                EngineAlert.account_id == account.id,
                EngineAlert.title == title[:300],
                EngineAlert.acknowledged_at.is_not(None),
                EngineAlert.acknowledged_by.is_not(None),
                EngineAlert.acknowledged_at >= since,
            )
            .limit(1)
        )
        return found is not None


__all__ = [
    "ALERT_KIND",
    "AccountReconciliation",
    "Gap",
    "Reconciler",
    "StrayOrder",
    "compare_positions",
    "stray_orders",
    "unverified_title",
]
