"""The chaos auditor (issue 13, Deliver 2): the paper exchange's own ledger against AlgoMirror's records.

The exchange's orders and trades (``GET /sim/ledger`` on its control API) are the ground truth. The audit
checks, per account, that every intended order reached the exchange at most once, that no position of a run
crossed zero (an exit never oversells or overbuys), that entry BUY legs were filled before any entry SELL
leg was sent, and (at the end, engine idle) that every opened position was closed exactly once or is
visibly in error with an alert, that AlgoMirror's realised P&L equals the exchange's to the paisa, and that
nothing was left in an in-between state without an alert. :func:`render` prints the table and the one-line
summary the chaos command ends with.

Limits a driver must respect:

* The exchange forgets its orders and trades at its 03:00 IST session reset: audit within one session.
* Only AlgoMirror-tagged orders count. The exchange's own MIS square-off (``AUTO_SQUARE_OFF``) is no
  exit of ours, so a leg it flattened shows as a missed exit: use NRML, or finish before 15:15 IST.
* Times are the exchange clock's. Under a clock that moves in steps, a SELL created in the same instant
  as the BUY's last fill counts as after it (the check is strict).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import httpx
from sqlalchemy import select

from algomirror.db.models import EngineAlert, EngineCommand, OrderIntent, StrategyExecution, StrategyRun
from algomirror.db.session import Database
from algomirror.domain import order_state
from algomirror.domain.timeutil import ensure_aware

AM_TAG_PREFIXES = ("AM-S", "AM-M")
PAISA = Decimal("0.01")
ZERO = Decimal(0)
# Exchange order statuses that may still fill.
LIVE_ORDER_STATUSES = frozenset({"open", "trigger pending"})
# Executions and runs that must not be left at the end of a chaos run without an alert saying why.
IN_BETWEEN_EXECUTIONS = frozenset({"pending", "exiting"})
ERROR_EXECUTIONS = frozenset({"error", "failed"})
SETTLED_RUNS = frozenset({"closed", "failed"})
UNFINISHED_COMMANDS = ("pending", "running")
# An intent that was sent but whose order id is not known yet may still own one order at the exchange.
UNRESOLVED_SEND_STATES = frozenset({order_state.SENT, order_state.UNKNOWN})


@dataclass(frozen=True)
class LedgerOrder:
    """One order as the paper exchange holds it. ``strategy`` is the tag sent with it (``AM-S{strategy_id}``
    for a run's orders, ``AM-M{command_id}`` for a manual one); ``created`` is aware UTC (exchange clock)."""

    account_key: str
    orderid: str
    strategy: str
    symbol: str
    exchange: str
    product: str
    action: str  # BUY | SELL
    quantity: int
    filled_quantity: int
    average_price: Decimal | None
    status: str
    created: datetime


@dataclass(frozen=True)
class LedgerTrade:
    """One fill at the exchange (``price`` in rupees, ``timestamp`` aware UTC on the exchange clock)."""

    account_key: str
    tradeid: str
    orderid: str
    symbol: str
    exchange: str
    product: str
    action: str
    quantity: int
    price: Decimal
    timestamp: datetime


@dataclass(frozen=True)
class Ledger:
    """Every account's orders and trades at the exchange at one instant."""

    orders: tuple[LedgerOrder, ...]
    trades: tuple[LedgerTrade, ...]


def fetch_ledger(control_url: str, token: str, *, timeout: float = 10.0) -> Ledger:
    """``GET {control_url}/sim/ledger`` with the control token; the exchange's orders and trades.

    ``control_url`` is the exchange's REST base (``http://127.0.0.1:PORT``), ``timeout`` in seconds.
    Raises ``httpx.HTTPError`` when the exchange cannot be reached or answers other than 200, and
    ``ValueError`` when the answer is not a ledger.
    """
    response = httpx.get(
        f"{control_url.rstrip('/')}/sim/ledger",
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )
    response.raise_for_status()
    payload = response.json()
    if not isinstance(payload, dict):
        raise ValueError("the ledger answer is not a JSON object")
    return ledger_from_json(payload)


def ledger_from_json(payload: Mapping[str, Any]) -> Ledger:
    """A :class:`Ledger` from the body of ``GET /sim/ledger``. Raises ValueError when a field is missing
    or malformed (a money value not a decimal string, a time without a UTC offset)."""
    try:
        orders = tuple(_order_of(row) for row in payload["orders"])
        trades = tuple(_trade_of(row) for row in payload["trades"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a ledger: {exc!r}") from exc
    return Ledger(orders, trades)


def _decimal(value: object) -> Decimal:
    if not isinstance(value, str | int):
        raise ValueError(f"money must be a decimal string, not {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"money must be a decimal string, not {value!r}") from exc
    if not number.is_finite():
        raise ValueError(f"money must be finite, not {value!r}")
    return number


def _instant(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"a time must be an ISO 8601 string, not {value!r}")
    return ensure_aware(datetime.fromisoformat(value))


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a quantity must be an integer, not {value!r}")
    return value


def _order_of(row: Mapping[str, Any]) -> LedgerOrder:
    average = row["average_price"]
    return LedgerOrder(
        account_key=str(row["account_key"]),
        orderid=str(row["orderid"]),
        strategy=str(row["strategy"] or ""),
        symbol=str(row["symbol"]),
        exchange=str(row["exchange"]),
        product=str(row["product"]),
        action=str(row["action"]),
        quantity=_int(row["quantity"]),
        filled_quantity=_int(row["filled_quantity"]),
        average_price=None if average is None else _decimal(average),
        status=str(row["status"]),
        created=_instant(row["created"]),
    )


def _trade_of(row: Mapping[str, Any]) -> LedgerTrade:
    return LedgerTrade(
        account_key=str(row["account_key"]),
        tradeid=str(row["tradeid"]),
        orderid=str(row["orderid"]),
        symbol=str(row["symbol"]),
        exchange=str(row["exchange"]),
        product=str(row["product"]),
        action=str(row["action"]),
        quantity=_int(row["quantity"]),
        price=_decimal(row["price"]),
        timestamp=_instant(row["timestamp"]),
    )


@dataclass
class AuditReport:
    """What the audit found; each list holds one human-readable line per finding (account, symbol, ids)."""

    orders: int  # exchange orders carrying an AlgoMirror tag
    duplicates: list[str]
    missed_exits: list[str]
    reversed_positions: list[str]
    pnl_mismatches: list[str]
    unexplained: list[str]
    buy_first_violations: list[str]  # an entry SELL leg sent on an account before its BUY legs filled

    @property
    def defects(self) -> int:
        """The number of findings of every kind."""
        return (
            len(self.duplicates)
            + len(self.missed_exits)
            + len(self.reversed_positions)
            + len(self.pnl_mismatches)
            + len(self.unexplained)
            + len(self.buy_first_violations)
        )

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return self.defects == 0


def audit(database: Database, ledger: Ledger, *, account_keys: Mapping[int, str], final: bool) -> AuditReport:
    """Compare ``ledger`` (the exchange) with the journal, executions, runs, commands and alerts in
    ``database``.

    ``account_keys`` maps ``trading_accounts.id`` to that account's API key at the exchange; exchange
    orders of other keys are ignored. ``final=False`` (after a restart, the engine possibly mid-work)
    checks only what must hold at every instant: duplicates, reversed positions, BUY-first order.
    ``final=True`` (engine idle, every cycle finished) checks everything. Raises only on database errors.
    """
    with database.session_factory() as session:
        # One snapshot for every read: the engine may be writing meanwhile (final=False), and an intent
        # read after its execution changed would tell another story. SQLite's deferred transaction is a
        # snapshot from its first read already; PostgreSQL's default (READ COMMITTED) is per statement.
        if database.engine.dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        intents = [
            _Intent(
                r.id,
                r.key,
                r.execution_id,
                r.account_id,
                r.purpose,
                r.symbol,
                r.exchange,
                r.product,
                r.side,
                r.quantity,
                r.strategy_tag or "",
                r.order_id,
                r.state,
            )
            for r in session.scalars(select(OrderIntent).order_by(OrderIntent.id))
            if r.account_id in account_keys
        ]
        executions = [
            _Execution(
                r.id, r.run_id, r.account_id, r.strategy_id, r.status, r.planned_quantity, r.realized_pnl
            )
            for r in session.scalars(select(StrategyExecution).order_by(StrategyExecution.id))
            if r.account_id in account_keys
        ]
        # Runs with a leg on an account asked about, or with no legs at all (a run that died entering).
        mine = {e.run_id for e in executions}
        elsewhere = set(session.scalars(select(StrategyExecution.run_id).distinct())) - mine
        runs = [
            _Run(r.id, r.strategy_id, r.status, r.final_pnl)
            for r in session.scalars(select(StrategyRun).order_by(StrategyRun.id))
            if r.id not in elsewhere
        ]
        alerts = [
            _Alert(r.id, r.account_id, r.run_id, r.execution_id)
            for r in session.scalars(select(EngineAlert).where(EngineAlert.acknowledged_at.is_(None)))
        ]
        commands = [
            (r.id, r.kind, r.status)
            for r in session.scalars(
                select(EngineCommand)
                .where(EngineCommand.status.in_(UNFINISHED_COMMANDS))
                .order_by(EngineCommand.id)
            )
        ]
    return _Audit(ledger, account_keys, intents, executions, runs, alerts, commands, final=final).report()


@dataclass(frozen=True)
class RunStats:
    """Figures of one chaos run for the table (``seconds`` is wall-clock duration)."""

    seed: int
    database: str
    cycles: int
    strategy_account_cycles: int
    kills: int
    kills_by_point: Mapping[str, int]
    faults: Mapping[str, int]
    orders: int
    seconds: float


def render(report: AuditReport, stats: RunStats) -> str:
    """The table (cycles, faults by kind, kills by point, orders, then each kind of finding with its lines)
    and, last, exactly
    ``chaos: C cycles, K kills, duplicates D, missed exits M, reversed R, pnl mismatches P, unexplained U``.
    """
    width = 26
    lines = [f"chaos run: seed {stats.seed}, database {stats.database}, {stats.seconds:.1f} s"]

    def row(label: str, value: object, indent: int = 2) -> None:
        lines.append(f"{' ' * indent}{label:<{width - indent + 2}} {value}")

    row("cycles", stats.cycles)
    row("strategy-account cycles", stats.strategy_account_cycles)
    row("kills", stats.kills)
    for point, count in sorted(stats.kills_by_point.items()):
        row(point, count, 4)
    row("faults", sum(stats.faults.values()))
    for kind, count in sorted(stats.faults.items()):
        row(kind, count, 4)
    row("orders", report.orders)
    for label, found in (
        ("duplicates", report.duplicates),
        ("missed exits", report.missed_exits),
        ("reversed positions", report.reversed_positions),
        ("P&L mismatches", report.pnl_mismatches),
        ("unexplained states", report.unexplained),
        ("BUY-first violations", report.buy_first_violations),
    ):
        row(label, len(found))
        lines.extend(f"    - {line}" for line in found)
    lines.append(
        f"chaos: {stats.cycles} cycles, {stats.kills} kills, duplicates {len(report.duplicates)}, "
        f"missed exits {len(report.missed_exits)}, reversed {len(report.reversed_positions)}, "
        f"pnl mismatches {len(report.pnl_mismatches)}, unexplained {len(report.unexplained)}"
    )
    return "\n".join(lines)


# -- the audit's working snapshot of the database -------------------------------------------------------


@dataclass(frozen=True)
class _Intent:
    id: int
    key: str
    execution_id: int | None
    account_id: int
    purpose: str
    symbol: str
    exchange: str
    product: str
    side: str
    quantity: int
    tag: str
    order_id: str | None
    state: str


@dataclass(frozen=True)
class _Execution:
    id: int
    run_id: int
    account_id: int
    strategy_id: int
    status: str
    planned: int | None
    realized_pnl: Decimal | None


@dataclass(frozen=True)
class _Run:
    id: int
    strategy_id: int
    status: str
    final_pnl: Decimal | None


@dataclass(frozen=True)
class _Alert:
    id: int
    account_id: int | None
    run_id: int | None
    execution_id: int | None


def is_algomirror_tag(tag: str) -> bool:
    """True for the tags AlgoMirror sends (``AM-S{strategy_id}``, ``AM-M{command_id}``)."""
    return tag.startswith(AM_TAG_PREFIXES)


def _signed(action: str, quantity: int) -> int:
    return quantity if action.upper() == "BUY" else -quantity


class _Audit:
    """One audit: indexes the ledger and the rows once, then each check reads them."""

    def __init__(
        self,
        ledger: Ledger,
        account_keys: Mapping[int, str],
        intents: Sequence[_Intent],
        executions: Sequence[_Execution],
        runs: Sequence[_Run],
        alerts: Sequence[_Alert],
        commands: Sequence[tuple[int, str, str]],
        *,
        final: bool,
    ) -> None:
        self.final = final
        self.account_of = {key: account_id for account_id, key in account_keys.items()}
        self.intents = intents
        self.executions = {e.id: e for e in executions}
        self.runs = {r.id: r for r in runs}
        self.alerts = alerts
        self.commands = commands
        # Only the accounts asked about, and only AlgoMirror's orders: the exchange's own square-off
        # (AUTO_SQUARE_OFF) and whatever a person typed elsewhere are not ours to account for.
        self.orders = sorted(
            (o for o in ledger.orders if o.account_key in self.account_of and is_algomirror_tag(o.strategy)),
            key=lambda o: (o.created, o.orderid),
        )
        self.order_by_id = {(o.account_key, o.orderid): o for o in self.orders}
        self.trades: dict[tuple[str, str], list[LedgerTrade]] = defaultdict(list)
        # sorted() is stable: trades of one instant keep the exchange's own order.
        for trade in sorted(ledger.trades, key=lambda t: t.timestamp):
            if (trade.account_key, trade.orderid) in self.order_by_id:
                self.trades[(trade.account_key, trade.orderid)].append(trade)
        self.key_of = dict(account_keys)
        self.duplicates: list[str] = []
        self.owner: dict[tuple[str, str], _Intent] = {}
        self._own()
        # Indexes for the checks (a long chaos run has thousands of executions and orders).
        self.by_execution: dict[int, list[tuple[_Intent, LedgerOrder]]] = defaultdict(list)
        for ref, intent in self.owner.items():
            if intent.execution_id is not None:
                self.by_execution[intent.execution_id].append((intent, self.order_by_id[ref]))
        self._run_starts: defaultdict[tuple[str, str], dict[int, datetime]] | None = None
        self.entry_side: dict[tuple[int, int, str, str, str], int] = {}
        for intent in self.intents:
            parent = self.executions.get(intent.execution_id or -1)
            if parent is not None and intent.purpose == "entry":
                instrument = (
                    parent.run_id,
                    intent.account_id,
                    intent.symbol,
                    intent.exchange,
                    intent.product,
                )
                self.entry_side.setdefault(instrument, 1 if intent.side.upper() == "BUY" else -1)

    # -- ownership and duplicates ---------------------------------------------------------------------

    def _own(self) -> None:
        by_order: dict[tuple[str, str], _Intent] = {}
        for intent in self.intents:
            if intent.order_id:
                by_order[(self.key_of[intent.account_id], intent.order_id)] = intent
        # Intents sent whose order id the engine has not learnt yet (a kill or a timeout after the
        # exchange accepted): each may own one matching order, as the engine's own resolution by tag
        # would adopt it. Only while the engine may still be working: at the end nothing may be pending.
        waiting = [
            i for i in self.intents if not i.order_id and i.state in UNRESOLVED_SEND_STATES and not self.final
        ]
        claimed: dict[int, LedgerOrder] = {}
        for order in self.orders:
            ref = (order.account_key, order.orderid)
            owner = by_order.get(ref)
            if owner is not None:
                self.owner[ref] = owner
                continue
            account_id = self.account_of[order.account_key]
            matches = [
                i
                for i in waiting
                if i.account_id == account_id
                and i.symbol == order.symbol
                and i.exchange == order.exchange
                and i.product == order.product
                and i.side == order.action
                and i.quantity == order.quantity
                and i.tag == order.strategy
            ]
            free = [i for i in matches if i.id not in claimed]
            if free:
                claimed[free[0].id] = order
                self.owner[ref] = free[0]
                continue
            if matches:
                rival = claimed[matches[0].id]
                self.duplicates.append(
                    f"account {account_id} {order.symbol} {order.action} {order.quantity}: exchange orders "
                    f"{rival.orderid} and {order.orderid} (tag {order.strategy}) compete for intent "
                    f"{matches[0].key} (sent, no order id yet)"
                )
                continue
            self.duplicates.append(
                f"account {account_id} {order.symbol} {order.action} {order.quantity}: exchange order "
                f"{order.orderid} (tag {order.strategy}, {order.status}, filled {order.filled_quantity}) "
                "is owned by no intent"
            )

    def _filled(self, ref: tuple[str, str]) -> int:
        return sum(t.quantity for t in self.trades.get(ref, ()))

    def _orders_of(self, execution_id: int, purpose: str | None = None) -> list[LedgerOrder]:
        return [
            order
            for intent, order in self.by_execution.get(execution_id, ())
            if purpose is None or intent.purpose == purpose
        ]

    def _execution_quantities(self) -> None:
        for execution in self.executions.values():
            entries = self._orders_of(execution.id, "entry")
            exits = self._orders_of(execution.id, "exit")
            entered = sum(self._filled((o.account_key, o.orderid)) for o in entries)
            exited = sum(self._filled((o.account_key, o.orderid)) for o in exits)
            where = f"account {execution.account_id} run {execution.run_id} execution {execution.id}"
            if execution.planned is not None and entered > execution.planned:
                ids = ", ".join(o.orderid for o in entries)
                self.duplicates.append(
                    f"{where}: entry filled {entered} at the exchange, {execution.planned} intended "
                    f"(orders {ids})"
                )
            if exited > entered:
                ids = ", ".join(o.orderid for o in exits)
                self.duplicates.append(
                    f"{where}: exit filled {exited} at the exchange, above the entry's {entered} "
                    f"(orders {ids})"
                )

    # -- positions ---------------------------------------------------------------------------------------

    def _run_of(self, ref: tuple[str, str]) -> int | None:
        intent = self.owner.get(ref)
        if intent is None or intent.execution_id is None:
            return None
        execution = self.executions.get(intent.execution_id)
        return execution.run_id if execution else None

    def _stray_run(self, order: LedgerOrder) -> int | None:
        """The run an order no intent owns most likely belongs to: of the strategy its tag names, the last
        run whose first owned order on that account came no later than it."""
        if not order.strategy.startswith("AM-S"):
            return None
        if self._run_starts is None:
            # (account key, tag) -> {run id: its first owned order's creation}, built once.
            self._run_starts = defaultdict(dict)
            for ref, intent in self.owner.items():
                run_id = self._run_of(ref)
                if run_id is None:
                    continue
                owned = self.order_by_id[ref]
                starts = self._run_starts[(owned.account_key, intent.tag)]
                starts[run_id] = min(starts.get(run_id, owned.created), owned.created)
        candidates = self._run_starts.get((order.account_key, order.strategy), {})
        before = [(at, run_id) for run_id, at in candidates.items() if at <= order.created]
        return max(before)[1] if before else None

    def _reversals(self) -> list[str]:
        groups: dict[tuple[str, str, str, str, str], list[LedgerOrder]] = defaultdict(list)
        for order in self.orders:
            ref = (order.account_key, order.orderid)
            run_id = self._run_of(ref) if ref in self.owner else self._stray_run(order)
            owner = f"run {run_id}" if run_id is not None else f"tag {order.strategy}"
            groups[(order.account_key, order.symbol, order.exchange, order.product, owner)].append(order)
        found: list[str] = []
        for (key, symbol, exchange, product, owner), orders in groups.items():
            direction = self._entry_direction(owner, self.account_of[key], symbol, exchange, product)
            trades = sorted(
                (t for o in orders for t in self.trades.get((key, o.orderid), ())), key=lambda t: t.timestamp
            )
            position = 0
            for trade in trades:
                position += _signed(trade.action, trade.quantity)
                if direction == 0:
                    direction = 1 if position > 0 else -1
                if position * direction < 0:
                    side = "BUY" if direction > 0 else "SELL"
                    found.append(
                        f"account {self.account_of[key]} {symbol} {exchange} {product} {owner}: position "
                        f"went to {position} (entry side {side}) at trade {trade.tradeid} of order "
                        f"{trade.orderid}"
                    )
                    break
        return found

    def _entry_direction(self, owner: str, account_id: int, symbol: str, exchange: str, product: str) -> int:
        """+1 when the run's entries on this instrument buy, -1 when they sell, 0 when unknown (then the
        first fill decides)."""
        if not owner.startswith("run "):
            return 0
        run_id = int(owner.removeprefix("run "))
        return self.entry_side.get((run_id, account_id, symbol, exchange, product), 0)

    # -- BUY legs first ----------------------------------------------------------------------------------

    def _buy_first(self) -> list[str]:
        legs: dict[tuple[int, int], list[tuple[_Intent, LedgerOrder]]] = defaultdict(list)
        for ref, intent in self.owner.items():
            run_id = self._run_of(ref)
            if run_id is not None and intent.purpose == "entry":
                legs[(run_id, intent.account_id)].append((intent, self.order_by_id[ref]))
        found: list[str] = []
        for (run_id, account_id), pairs in sorted(legs.items()):
            buys = [o for i, o in pairs if i.side.upper() == "BUY"]
            for sell in sorted((o for i, o in pairs if i.side.upper() == "SELL"), key=lambda o: o.created):
                for buy in buys:
                    done = self._done_at(buy)
                    if buy.created > sell.created or done is None or done > sell.created:
                        when = "still working" if done is None else f"filled {done.isoformat()}"
                        found.append(
                            f"run {run_id} account {account_id}: entry SELL {sell.orderid} {sell.symbol} "
                            f"created {sell.created.isoformat()} before entry BUY {buy.orderid} {buy.symbol} "
                            f"(created {buy.created.isoformat()}, {when})"
                        )
                        break
        return found

    def _done_at(self, order: LedgerOrder) -> datetime | None:
        """When the order stopped being able to fill more (its last fill; its creation for one that ended
        unfilled), or None while it is still working."""
        if order.status in LIVE_ORDER_STATUSES:
            return None
        trades = self.trades.get((order.account_key, order.orderid), [])
        return trades[-1].timestamp if trades else order.created

    # -- at the end --------------------------------------------------------------------------------------

    def _explained(self, *, execution: _Execution | None = None, run_id: int | None = None) -> bool:
        """True when an open alert names the execution, its run or its account (or, for a run alone, the
        run or one of its executions)."""
        for alert in self.alerts:
            if execution is not None:
                if alert.execution_id == execution.id:
                    return True
                if alert.execution_id is None and alert.run_id == execution.run_id:
                    return True
                if (
                    alert.execution_id is None
                    and alert.run_id is None
                    and alert.account_id == execution.account_id
                ):
                    return True
            elif run_id is not None:
                if alert.run_id == run_id:
                    return True
                named = self.executions.get(alert.execution_id or -1)
                if named is not None and named.run_id == run_id:
                    return True
        return False

    def _exchange_pnl(self, orders: Iterable[LedgerOrder]) -> tuple[int, Decimal, bool]:
        """(net signed quantity, Σ sell value − Σ buy value, whether any fill) of the orders' trades."""
        net, value, any_fill = 0, ZERO, False
        for order in orders:
            for trade in self.trades.get((order.account_key, order.orderid), ()):
                any_fill = True
                net += _signed(trade.action, trade.quantity)
                value -= _signed(trade.action, trade.quantity) * trade.price
        return net, value, any_fill

    def _final_checks(self) -> tuple[list[str], list[str], list[str]]:
        missed: list[str] = []
        pnl: list[str] = []
        unexplained: list[str] = []
        run_pnl: dict[int, Decimal] = defaultdict(lambda: ZERO)
        run_open: set[int] = set()
        for execution in self.executions.values():
            where = f"account {execution.account_id} run {execution.run_id} execution {execution.id}"
            entered = sum(
                self._filled((o.account_key, o.orderid)) for o in self._orders_of(execution.id, "entry")
            )
            net, value, any_fill = self._exchange_pnl(self._orders_of(execution.id))
            explained = self._explained(execution=execution)
            if entered and net != 0:
                run_open.add(execution.run_id)
                if not (execution.status in ERROR_EXECUTIONS and explained):
                    missed.append(
                        f"{where}: {net:+d} still open at the exchange (status {execution.status}, "
                        f"{'an alert' if explained else 'no alert'})"
                    )
            elif any_fill or execution.realized_pnl is not None:
                exact = value.quantize(PAISA, rounding=ROUND_HALF_UP)
                run_pnl[execution.run_id] += exact
                if execution.realized_pnl is None and any_fill:
                    pnl.append(f"{where}: exchange realised {exact}, AlgoMirror recorded none")
                elif execution.realized_pnl is not None and execution.realized_pnl != exact:
                    pnl.append(f"{where}: exchange realised {exact}, AlgoMirror {execution.realized_pnl}")
            if execution.status in IN_BETWEEN_EXECUTIONS and not explained:
                unexplained.append(f"{where}: left {execution.status} with no alert")
            elif execution.status == "error" and not explained:
                unexplained.append(f"{where}: in error with no alert")
            elif execution.status == "active" and net == 0:
                unexplained.append(f"{where}: active in AlgoMirror, flat at the exchange")
        for run in self.runs.values():
            if run.status not in SETTLED_RUNS and not self._explained(run_id=run.id):
                unexplained.append(
                    f"run {run.id} (strategy {run.strategy_id}): left {run.status} with no alert"
                )
            if run.status == "closed" and run.id not in run_open:
                total = run_pnl.get(run.id, ZERO)
                if run.final_pnl is None or run.final_pnl != total:
                    pnl.append(
                        f"run {run.id}: exchange realised {total}, AlgoMirror final P&L {run.final_pnl}"
                    )
        for intent in self.intents:
            if intent.state in order_state.TERMINAL_STATES:
                continue
            parent = self.executions.get(intent.execution_id or -1)
            if parent is not None:
                explained = self._explained(execution=parent)
            else:
                explained = any(a.account_id == intent.account_id for a in self.alerts)
            if not explained:
                unexplained.append(
                    f"account {intent.account_id} intent {intent.key}: left {intent.state} "
                    f"(order {intent.order_id or 'none'}) with no alert"
                )
        for command_id, kind, status in self.commands:
            unexplained.append(f"engine command {command_id} ({kind}): left {status}")
        return missed, pnl, unexplained

    def report(self) -> AuditReport:
        self._execution_quantities()
        reversed_positions = self._reversals()
        buy_first = self._buy_first()
        missed: list[str] = []
        pnl: list[str] = []
        unexplained: list[str] = []
        if self.final:
            missed, pnl, unexplained = self._final_checks()
        return AuditReport(
            orders=len(self.orders),
            duplicates=self.duplicates,
            missed_exits=missed,
            reversed_positions=reversed_positions,
            pnl_mismatches=pnl,
            unexplained=unexplained,
            buy_first_violations=buy_first,
        )
