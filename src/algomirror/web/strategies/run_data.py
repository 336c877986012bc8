"""What the Execution page and the strategy list read about runs (PRODUCT §5.10, §5.12, §6.1): no routes.

A run's executions (leg × account) with their fills, marks and P&L; per-account and run totals; the
engine commands of the run (its ``execute_run``/``execute_strategy`` and the exits that touch it); the
strategy's past runs; and, for the strategy list, each strategy's state and today's P&L.

P&L comes from :mod:`algomirror.domain.pnl` on the execution's fills (entry and exit averages with their
quantities). The mark is the execution's own last price (the engine's feed or REST quote), else the
synced broker position's LTP for the same account, symbol and exchange; a mark older than the page's
staleness limit, or none at all, is not usable, so open units make the P&L unknown (never 0).

Every query is bounded by the user's id (strategies joined on ``user_id``): another user's rows are never
read. The queries per page are a fixed handful whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from algomirror.db.models import (
    EngineCommand,
    Position,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.domain.money import PAISA
from algomirror.domain.pnl import ExecutionFills, ExecutionPnl, Fill, PnlTotals, execution_pnl, run_pnl
from algomirror.domain.timeutil import IST
from algomirror.engine.exit_planning import EXIT_COMMAND
from algomirror.engine.planning import EXECUTE_RUN
from algomirror.web.strategy_groups import leg_label

# The engine command (engine.resolution) that plans a strategy's run and names it in its result
# (docs/execution.md).
EXECUTE_STRATEGY = "execute_strategy"
RUN_COMMAND_KINDS = (EXECUTE_RUN, EXECUTE_STRATEGY, EXIT_COMMAND)
# Executions an exit can still act on: active ones are claimed, pending ones have their working entry
# orders cancelled first (docs/execution.md, Exits 7).
EXITABLE = ("pending", "active")
# A person's exit (the page's reasons ``manual`` / ``exit_all``: ``retry_errors``) also takes a leg in
# ``error`` with units still open back to ``exiting`` (exit_planning.request_exit, exit_records.claim_exit).
RETRIED = "error"
PAST_RUNS_SHOWN = 50
COMMANDS_SHOWN = 50
# The user's latest commands looked through for a run's (bounded: a page never reads the whole queue).
COMMANDS_SCANNED = 500
# Strategy-list states (PRODUCT §4.3): the run status as a trader reads it.
STATE_OF_RUN = {
    "entering": "entering",
    "active": "active",
    "exiting": "exiting",
    "closed": "closed",
    "failed": "error",
    "error": "error",
}
NO_RUN = "no run"


@dataclass(frozen=True)
class Mark:
    """The price an open execution is valued at, where it came from and when; ``usable`` False when it is
    older than the page's staleness limit (shown, but not used for P&L)."""

    price: Decimal | None
    at: datetime | None
    source: str | None
    usable: bool

    def age_seconds(self, now: datetime) -> int | None:
        """Whole seconds since the mark was taken (None when unknown)."""
        if self.at is None:
            return None
        return max(0, int((now - self.at).total_seconds()))


def person_exit_takes(status: str, filled: int, exited: int) -> bool:
    """Whether a person's exit (reason ``manual`` or ``exit_all``, which retries legs in error) acts on
    an execution in ``status`` with ``filled`` / ``exited`` units: pending and active ones, and those in
    error with units still open."""
    return status in EXITABLE or (status == RETRIED and filled > exited)


@dataclass
class ExecutionRow:
    """One leg × account of the run as the page shows it."""

    id: int
    run_id: int
    leg_id: int
    leg_number: int
    leg_label: str
    account_id: int
    account_name: str
    symbol: str | None
    exchange: str | None
    side: str | None
    status: str
    broker_status: str | None
    planned: int | None
    filled: int
    exited: int
    open_quantity: int
    entry_average: Decimal | None
    exit_average: Decimal | None
    mark: Mark
    pnl: Decimal | None
    realised: Decimal | None
    unrealised: Decimal | None
    error: str | None
    exit_reason: str | None
    exit_detail: str | None
    entry_order_ids: list[str]
    exit_order_ids: list[str]
    entry_time: datetime | None
    exit_time: datetime | None

    @property
    def can_exit(self) -> bool:
        """The per-row Exit button: only an active execution is exited on its own."""
        return self.status == "active"

    @property
    def in_error(self) -> bool:
        """Its exit used up its attempts: the row offers "Retry exit" and "Closed outside…"."""
        return self.status == RETRIED

    @property
    def retryable(self) -> bool:
        """Whether "Retry exit" acts on it: in error with units open (the engine's claim needs
        filled > exited)."""
        return self.status == RETRIED and self.filled > self.exited

    @property
    def pnl_kind(self) -> str:
        """ "realised" for a flat execution, "unrealised" while units are open, "" without fills."""
        if self.filled == 0:
            return ""
        return "realised" if self.open_quantity == 0 else "unrealised"

    @property
    def order_ids_text(self) -> str:
        """Every order id for the tooltip: entries, then exits."""
        parts = []
        if self.entry_order_ids:
            parts.append("entry: " + ", ".join(self.entry_order_ids))
        if self.exit_order_ids:
            parts.append("exit: " + ", ".join(self.exit_order_ids))
        return " · ".join(parts) or "no order yet"


@dataclass
class AccountGroup:
    """One account's executions in the run (leg order) and their totals."""

    account_id: int
    account_name: str
    rows: list[ExecutionRow] = field(default_factory=list)
    totals: PnlTotals = field(default_factory=lambda: PnlTotals(Decimal(0), Decimal(0), Decimal(0)))

    @property
    def exitable(self) -> int:
        """How many of its executions an account exit acts on."""
        return sum(1 for row in self.rows if person_exit_takes(row.status, row.filled, row.exited))


@dataclass(frozen=True)
class CommandRow:
    """An engine command of the run and how far it got."""

    id: int
    kind: str
    scope: str | None
    status: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    label: str


@dataclass(frozen=True)
class SkippedAccount:
    """An account the pre-checks left out of the run, with why."""

    account_id: int | None
    account_name: str
    reason: str


@dataclass
class RunView:
    """Everything the Execution page shows about one run."""

    run: StrategyRun
    groups: list[AccountGroup]
    totals: PnlTotals
    commands: list[CommandRow]
    skipped: list[SkippedAccount]
    warnings: list[str]
    failures: list[str]
    unknown_marks: int

    @property
    def rows(self) -> list[ExecutionRow]:
        """Every execution row, account by account."""
        return [row for group in self.groups for row in group.rows]

    @property
    def exitable(self) -> int:
        """How many executions a run exit acts on."""
        return sum(group.exitable for group in self.groups)

    @property
    def is_open(self) -> bool:
        """Whether the run has not ended."""
        return self.run.ended_at is None


@dataclass(frozen=True)
class PastRun:
    """One line of the strategy's run history."""

    id: int
    status: str
    started_at: datetime
    ended_at: datetime | None
    reason: str | None
    final_pnl: Decimal | None


@dataclass(frozen=True)
class StrategyRunState:
    """A strategy's line on the list: its state, the run it comes from and today's P&L (None = unknown;
    ``has_today`` False when no run started today)."""

    state: str
    run_id: int | None
    today_pnl: Decimal | None
    has_today: bool


# ------------------------------------------------------------------------------------------ lookups


def owned_run(session: Session, user_id: int, strategy_id: int, run_id: int) -> StrategyRun | None:
    """Run ``run_id`` of the user's strategy ``strategy_id`` (None when either is not the user's)."""
    return session.scalar(
        select(StrategyRun)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(StrategyRun.id == run_id, StrategyRun.strategy_id == strategy_id, Strategy.user_id == user_id)
    )


def current_run(session: Session, user_id: int, strategy_id: int) -> StrategyRun | None:
    """The strategy's open run, else its latest one (None when it never ran)."""
    base = (
        select(StrategyRun)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(StrategyRun.strategy_id == strategy_id, Strategy.user_id == user_id)
    )
    found = session.scalar(
        base.where(StrategyRun.ended_at.is_(None)).order_by(StrategyRun.id.desc()).limit(1)
    )
    if found is not None:
        return found
    return session.scalar(base.order_by(StrategyRun.started_at.desc(), StrategyRun.id.desc()).limit(1))


def past_runs(session: Session, strategy_id: int, *, exclude: int | None = None) -> list[PastRun]:
    """The strategy's runs, newest first (at most :data:`PAST_RUNS_SHOWN`), without ``exclude``. The
    caller has checked the strategy is the user's."""
    query = select(StrategyRun).where(StrategyRun.strategy_id == strategy_id)
    if exclude is not None:
        query = query.where(StrategyRun.id != exclude)
    rows = session.scalars(
        query.order_by(StrategyRun.started_at.desc(), StrategyRun.id.desc()).limit(PAST_RUNS_SHOWN)
    )
    return [
        PastRun(
            id=r.id,
            status=r.status,
            started_at=r.started_at,
            ended_at=r.ended_at,
            reason=r.exit_reason_detail or r.exit_reason,
            final_pnl=r.final_pnl,
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------------- executions


def _marks(
    session: Session, executions: Sequence[StrategyExecution]
) -> dict[tuple[int, str, str], tuple[Decimal | None, datetime]]:
    """The synced broker positions' LTP (and fetch time) per (account, symbol, exchange), for the
    executions without a mark of their own."""
    wanted = {
        (e.account_id, e.symbol, e.exchange)
        for e in executions
        if e.last_price is None and e.symbol is not None and e.exchange is not None
    }
    if not wanted:
        return {}
    accounts = {a for a, _, _ in wanted}
    found: dict[tuple[int, str, str], tuple[Decimal | None, datetime]] = {}
    for account_id, symbol, exchange, ltp, updated in session.execute(
        select(
            Position.account_id, Position.symbol, Position.exchange, Position.ltp, Position.updated_at
        ).where(Position.account_id.in_(accounts), Position.symbol.in_({s for _, s, _ in wanted}))
    ):
        key = (account_id, symbol, exchange)
        if key in wanted and ltp is not None:
            found[key] = (ltp, updated)
    return found


def _mark_of(
    execution: StrategyExecution,
    positions: dict[tuple[int, str, str], tuple[Decimal | None, datetime]],
    now: datetime,
    stale_after: timedelta,
) -> Mark:
    price, at, source = execution.last_price, execution.last_price_updated, execution.last_price_source
    if price is None and execution.symbol is not None and execution.exchange is not None:
        held = positions.get((execution.account_id, execution.symbol, execution.exchange))
        if held is not None:
            price, at, source = held[0], held[1], "positions"
    usable = price is not None and price > 0 and at is not None and now - at <= stale_after
    return Mark(price=price, at=at, source=source, usable=usable)


def _fills(execution: StrategyExecution, side: str, mark: Mark) -> ExecutionFills:
    """The execution's fills as the domain reads them: the entry and exit averages with their quantities
    (a filled quantity without its average is a price pending, §5.11)."""
    entries: list[Fill] = []
    exits: list[Fill] = []
    if execution.filled_quantity > 0:
        entries.append(Fill(execution.filled_quantity, execution.entry_price))
    exited = min(execution.exited_quantity, execution.filled_quantity)
    if exited > 0:
        exits.append(Fill(exited, execution.exit_price))
    return ExecutionFills(
        run_id=execution.run_id,
        account_id=execution.account_id,
        leg_id=execution.leg_id,
        side="SELL" if side == "SELL" else "BUY",
        entries=entries,
        exits=exits,
        mark=mark.price if mark.usable else None,
    )


def _executions(session: Session, run_ids: Iterable[int]) -> list[tuple[StrategyExecution, StrategyLeg, str]]:
    ids = list(run_ids)
    if not ids:
        return []
    query = (
        select(StrategyExecution, StrategyLeg, TradingAccount.account_name)
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .join(TradingAccount, TradingAccount.id == StrategyExecution.account_id)
        .where(StrategyExecution.run_id.in_(ids))
        .order_by(TradingAccount.id, StrategyLeg.leg_number, StrategyExecution.id)
    )
    return [(e, leg, name) for e, leg, name in session.execute(query).tuples()]


def _leg_text(leg: StrategyLeg) -> str:
    return leg_label(
        {
            "leg_number": leg.leg_number,
            "action": leg.action,
            "instrument": leg.instrument,
            "product_type": leg.product_type,
            "option_type": leg.option_type,
            "strike_selection": leg.strike_selection,
            "strike_offset": leg.strike_offset,
            "strike_price": leg.strike_price,
            "premium_value": leg.premium_value,
        }
    )


def _row(
    execution: StrategyExecution, leg: StrategyLeg, account_name: str, mark: Mark, pnl: ExecutionPnl
) -> ExecutionRow:
    return ExecutionRow(
        id=execution.id,
        run_id=execution.run_id,
        leg_id=leg.id,
        leg_number=leg.leg_number,
        leg_label=_leg_text(leg),
        account_id=execution.account_id,
        account_name=account_name,
        symbol=execution.symbol,
        exchange=execution.exchange,
        side=leg.action,
        status=execution.status,
        broker_status=execution.broker_order_status,
        planned=execution.planned_quantity,
        filled=execution.filled_quantity,
        exited=execution.exited_quantity,
        open_quantity=pnl.open_quantity,
        entry_average=execution.entry_price,
        exit_average=execution.exit_price,
        mark=mark,
        pnl=pnl.total,
        realised=pnl.realised,
        unrealised=pnl.unrealised,
        error=execution.error_message,
        exit_reason=execution.exit_reason,
        exit_detail=execution.exit_reason_detail,
        entry_order_ids=[
            str(i)
            for i in (execution.entry_order_ids or ([execution.order_id] if execution.order_id else []))
        ],
        exit_order_ids=[
            str(i)
            for i in (
                execution.exit_order_ids or ([execution.exit_order_id] if execution.exit_order_id else [])
            )
        ],
        entry_time=execution.entry_time,
        exit_time=execution.exit_time,
    )


def _valued(
    session: Session, run_ids: Iterable[int], now: datetime, stale_after: timedelta
) -> tuple[list[ExecutionRow], dict[int, list[ExecutionFills]]]:
    loaded = _executions(session, run_ids)
    positions = _marks(session, [e for e, _, _ in loaded])
    rows: list[ExecutionRow] = []
    fills: dict[int, list[ExecutionFills]] = {}
    for execution, leg, name in loaded:
        mark = _mark_of(execution, positions, now, stale_after)
        item = _fills(execution, leg.action or "BUY", mark)
        fills.setdefault(execution.run_id, []).append(item)
        rows.append(_row(execution, leg, name, mark, execution_pnl(item)))
    return rows, fills


# ---------------------------------------------------------------------------------------- commands


def _entry_of(command: EngineCommand) -> int | None:
    """The run an entry command (``execute_run`` / ``execute_strategy``) planned, if it says."""
    if command.kind == EXECUTE_RUN:
        value = (command.payload or {}).get("run_id")
    elif command.kind == EXECUTE_STRATEGY:
        result = command.result if isinstance(command.result, dict) else {}
        value = result.get("run_id")
    else:
        return None
    return value if isinstance(value, int) else None


def _touches(command: EngineCommand, run_id: int, execution_ids: set[int]) -> bool:
    """Whether the command names the run directly (its entry, or an exit of its legs, an account or it)."""
    if command.kind in (EXECUTE_RUN, EXECUTE_STRATEGY):
        return _entry_of(command) == run_id
    payload = command.payload or {}
    scope = payload.get("scope")
    if scope == "execution":
        return payload.get("execution_id") in execution_ids
    if scope in ("account", "run"):
        return payload.get("run_id") == run_id
    return False


def _command_label(command: EngineCommand) -> str:
    payload = command.payload or {}
    if command.kind == EXECUTE_RUN:
        return "Place the entry orders"
    if command.kind == EXECUTE_STRATEGY:
        return "Plan and execute"
    scope = payload.get("scope")
    if scope == "execution":
        return f"Exit one leg (execution {payload.get('execution_id')})"
    if scope == "account":
        return f"Exit one account (account {payload.get('account_id')})"
    if scope == "run":
        return "Exit the strategy"
    return "Exit all"


def run_commands(
    session: Session, user_id: int, run: StrategyRun, execution_ids: set[int]
) -> list[CommandRow]:
    """The user's engine commands that concern ``run``, newest first: its entry, exits of its legs, of an
    account or of it, and each "exit all" queued after the run's entry and before the strategy's next
    run's entry. Command ids order them (their times are the web's wall clock, the run's the market's,
    which differ in the demo)."""
    commands = list(
        session.scalars(
            select(EngineCommand)
            .where(EngineCommand.user_id == user_id, EngineCommand.kind.in_(RUN_COMMAND_KINDS))
            .order_by(EngineCommand.id.desc())
            .limit(COMMANDS_SCANNED)
        )
    )
    later = set(
        session.scalars(
            select(StrategyRun.id).where(StrategyRun.strategy_id == run.strategy_id, StrategyRun.id > run.id)
        )
    )
    direct = [c for c in commands if _touches(c, run.id, execution_ids)]
    entries = [c.id for c in direct if c.kind in (EXECUTE_RUN, EXECUTE_STRATEGY)]
    after = min(entries) if entries else (min(c.id for c in direct) if direct else None)
    next_entries = [c.id for c in commands if _entry_of(c) in later]
    before = min(next_entries) if next_entries else None
    found: list[CommandRow] = []
    for command in commands:
        if command not in direct:
            is_all = command.kind == EXIT_COMMAND and (command.payload or {}).get("scope") == "all"
            if not is_all or after is None or command.id < after:
                continue
            if before is not None and command.id > before:
                continue
        found.append(
            CommandRow(
                id=command.id,
                kind=command.kind,
                scope=(command.payload or {}).get("scope"),
                status=command.status,
                error=command.error,
                created_at=command.created_at,
                finished_at=command.finished_at,
                label=_command_label(command),
            )
        )
        if len(found) >= COMMANDS_SHOWN:
            break
    return found


def latest_execute(session: Session, user_id: int, strategy_id: int) -> EngineCommand | None:
    """The user's latest ``execute_strategy`` command for ``strategy_id`` (the Execute button's, or the
    scheduler's), among the latest :data:`COMMANDS_SCANNED` of that kind; None when there is none."""
    for command in session.scalars(
        select(EngineCommand)
        .where(EngineCommand.user_id == user_id, EngineCommand.kind == EXECUTE_STRATEGY)
        .order_by(EngineCommand.id.desc())
        .limit(COMMANDS_SCANNED)
    ):
        if (command.payload or {}).get("strategy_id") == strategy_id:
            return command
    return None


# -------------------------------------------------------------------------------------------- runs


def _texts(items: Any) -> list[str]:
    """A result's list of warnings or failures as lines (strings, or dicts with a text field)."""
    if not isinstance(items, list):
        return []
    lines: list[str] = []
    for item in items:
        if isinstance(item, str):
            lines.append(item)
        elif isinstance(item, dict):
            text = item.get("error") or item.get("reason") or item.get("message") or item.get("warning")
            if text:
                lines.append(str(text))
    return lines


def _skipped(session: Session, user_id: int, result: dict[str, Any]) -> list[SkippedAccount]:
    raw = result.get("skipped")
    if not isinstance(raw, list):
        return []
    ids = {i.get("account_id") for i in raw if isinstance(i, dict) and isinstance(i.get("account_id"), int)}
    names: dict[int, str] = {}
    if ids:
        query = select(TradingAccount.id, TradingAccount.account_name).where(
            TradingAccount.id.in_(ids), TradingAccount.user_id == user_id
        )
        names = dict(list(session.execute(query).tuples()))
    skipped = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        account_id = item.get("account_id")
        name = names.get(account_id) if isinstance(account_id, int) else None
        skipped.append(
            SkippedAccount(
                account_id=account_id if isinstance(account_id, int) else None,
                account_name=name or (f"account {account_id}" if account_id is not None else "an account"),
                reason=str(item.get("reason") or "no reason given"),
            )
        )
    return skipped


def run_view(
    session: Session, user_id: int, run: StrategyRun, now: datetime, stale_after: timedelta
) -> RunView:
    """The page's view of ``run`` (the caller has checked it is the user's): executions grouped by account
    with subtotals, the run total, its commands and what its result says (skipped accounts, warnings,
    failures). ``stale_after`` bounds a usable mark's age on ``now``'s clock."""
    rows, fills = _valued(session, [run.id], now, stale_after)
    totals = run_pnl(fills.get(run.id, []), run.id)
    groups: dict[int, AccountGroup] = {}
    for row in rows:
        group = groups.get(row.account_id)
        if group is None:
            group = groups[row.account_id] = AccountGroup(row.account_id, row.account_name)
        group.rows.append(row)
    for account_id, group in groups.items():
        group.totals = totals.per_account.get(account_id, group.totals)
    result = run.result if isinstance(run.result, dict) else {}
    return RunView(
        run=run,
        groups=list(groups.values()),
        totals=totals.aggregate,
        commands=run_commands(session, user_id, run, {row.id for row in rows}),
        skipped=_skipped(session, user_id, result),
        warnings=_texts(result.get("warnings")),
        failures=_texts(result.get("failures")),
        unknown_marks=sum(1 for row in rows if row.open_quantity and not row.mark.usable),
    )


def strategy_states(
    session: Session, user_id: int, strategy_ids: Sequence[int], now: datetime, stale_after: timedelta
) -> dict[int, StrategyRunState]:
    """Per strategy: the state of its open (else latest) run and today's P&L (₹, to the paisa; None when
    any part of it is unknown — unknown is never 0). Three queries.

    Today's P&L (on ``now``'s IST day) = realised today + unrealised of open runs: the whole P&L of runs
    started today; for a run started on an earlier day that is still open (a carried-over position) or
    ended today, the unrealised P&L of its open units plus the realised P&L of its legs whose last exit
    is today (a leg exited on an earlier day counted then). ``has_today`` is False when no run counts."""
    if not strategy_ids:
        return {}
    day = now.astimezone(IST).date()
    midnight = datetime.combine(day, time(0), tzinfo=IST)
    # Only the runs the list needs (a strategy's history can be long): open ones, today's, and each
    # strategy's latest (ids grow with the start: plan_run stamps the run as it inserts it).
    latest_ids = (
        select(func.max(StrategyRun.id))
        .where(StrategyRun.strategy_id.in_(strategy_ids))
        .group_by(StrategyRun.strategy_id)
    )
    runs = session.scalars(
        select(StrategyRun)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(
            Strategy.user_id == user_id,
            StrategyRun.strategy_id.in_(strategy_ids),
            or_(
                StrategyRun.ended_at.is_(None),
                StrategyRun.started_at >= midnight,
                StrategyRun.ended_at >= midnight,
                StrategyRun.id.in_(latest_ids),
            ),
        )
        .order_by(StrategyRun.started_at, StrategyRun.id)
    ).all()
    shown: dict[int, StrategyRun] = {}
    today: dict[int, list[StrategyRun]] = {}
    for run in runs:
        current = shown.get(run.strategy_id)
        # The open run wins; otherwise the latest (runs come oldest first).
        if current is None or current.ended_at is not None or run.ended_at is None:
            shown[run.strategy_id] = run
        ended_today = run.ended_at is not None and _ist_day(run.ended_at) == day
        if _ist_day(run.started_at) == day or run.ended_at is None or ended_today:
            today.setdefault(run.strategy_id, []).append(run)
    rows, fills = _valued(session, [r.id for group in today.values() for r in group], now, stale_after)
    exited_on = {(r.run_id, r.account_id, r.leg_id): r.exit_time for r in rows}
    states: dict[int, StrategyRunState] = {}
    for strategy_id in strategy_ids:
        latest = shown.get(strategy_id)
        todays = today.get(strategy_id, [])
        total: Decimal | None = Decimal(0)
        for item in todays:
            if _ist_day(item.started_at) == day:
                value = _exact_total(fills.get(item.id, []), item.id)
            else:
                value = _carried_today(fills.get(item.id, []), item.id, exited_on, day)
            total = None if value is None or total is None else total + value
        if total is not None:
            total = total.quantize(PAISA, rounding=ROUND_HALF_UP)
        states[strategy_id] = StrategyRunState(
            state=STATE_OF_RUN.get(latest.status, latest.status) if latest is not None else NO_RUN,
            run_id=latest.id if latest is not None else None,
            today_pnl=total if todays else None,
            has_today=bool(todays),
        )
    return states


def _ist_day(at: datetime) -> date:
    return at.astimezone(IST).date()


def _exact_total(items: list[ExecutionFills], run_id: int) -> Decimal | None:
    """A run's whole P&L, exact (None when unknown)."""
    parts = [execution_pnl(i) for i in items if i.run_id == run_id]
    total = Decimal(0)
    for part in parts:
        if part.exact_realised is None or part.exact_unrealised is None:
            return None
        total += part.exact_realised + part.exact_unrealised
    return total


def _carried_today(
    items: list[ExecutionFills],
    run_id: int,
    exited_on: dict[tuple[int, int, int], datetime | None],
    day: date,
) -> Decimal | None:
    """Today's part of a run started on an earlier day, exact: the unrealised P&L of its open units and
    the realised P&L of its legs last exited on ``day`` (None when a counted part is unknown)."""
    total = Decimal(0)
    for item in items:
        if item.run_id != run_id:
            continue
        part = execution_pnl(item)
        if part.open_quantity:
            if part.exact_unrealised is None:
                return None
            total += part.exact_unrealised
        exit_time = exited_on.get((item.run_id, item.account_id, item.leg_id))
        if part.exit_quantity and exit_time is not None and _ist_day(exit_time) == day:
            if part.exact_realised is None:
                return None
            total += part.exact_realised
    return total


# ----------------------------------------------------------------------------------------- exit all


@dataclass(frozen=True)
class OpenLine:
    """How many executions an "exit all" acts on, for one strategy and account."""

    strategy_id: int
    strategy_name: str
    run_id: int
    account_id: int
    account_name: str
    count: int


def open_executions(session: Session, user_id: int) -> list[OpenLine]:
    """The user's open executions an "exit all" acts on (pending or active in an open run, and those in
    error with units open: exit all retries them), counted per strategy and account, in strategy then
    account order."""
    counts: dict[tuple[int, int, int], int] = {}
    names: dict[tuple[int, int, int], tuple[str, str]] = {}
    query = (
        select(Strategy.id, Strategy.name, StrategyRun.id, TradingAccount.id, TradingAccount.account_name)
        .select_from(StrategyExecution)
        .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
        .join(Strategy, and_(Strategy.id == StrategyExecution.strategy_id, Strategy.user_id == user_id))
        .join(TradingAccount, TradingAccount.id == StrategyExecution.account_id)
        .where(
            or_(
                StrategyExecution.status.in_(EXITABLE),
                and_(
                    StrategyExecution.status == RETRIED,
                    StrategyExecution.filled_quantity > StrategyExecution.exited_quantity,
                ),
            ),
            StrategyRun.ended_at.is_(None),
        )
        .order_by(Strategy.name, Strategy.id, TradingAccount.id)
    )
    for sid, sname, rid, aid, aname in session.execute(query).tuples():
        key = (sid, rid, aid)
        counts[key] = counts.get(key, 0) + 1
        names[key] = (sname, aname)
    return [
        OpenLine(sid, names[(sid, rid, aid)][0], rid, aid, names[(sid, rid, aid)][1], n)
        for (sid, rid, aid), n in counts.items()
    ]


__all__ = [
    "EXITABLE",
    "NO_RUN",
    "RETRIED",
    "AccountGroup",
    "CommandRow",
    "ExecutionRow",
    "Mark",
    "OpenLine",
    "PastRun",
    "RunView",
    "SkippedAccount",
    "StrategyRunState",
    "current_run",
    "latest_execute",
    "open_executions",
    "owned_run",
    "past_runs",
    "person_exit_takes",
    "run_commands",
    "run_view",
    "strategy_states",
]
