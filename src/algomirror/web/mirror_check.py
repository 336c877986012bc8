"""The mirror check's reads (issue 11 item 12): per open run of a user, each account's intended legs
against its synced positionbook, with every drift (:mod:`algomirror.domain.mirror`).

Intended (signed units, BUY +, SELL −) per account × (symbol, exchange, product): Σ over the run's
executions on that account, ``pending`` → planned quantity, ``active``/``exiting``/``error`` →
filled − exited (a leg in error still holds what it did not exit); other statuses intend nothing
(their symbols still count as the run's). The broker side is the ``positions`` table the engine's sync
writes, less what the user's OTHER open runs intend on the same key (two strategies on one account and
symbol share the position). Freshness is the positionbook's own fetch time
(``trading_accounts.positions_synced_at``, set by
:func:`~algomirror.engine.book_mirror.store_positions` on every good read, even an empty one; else the
newest ``positions.updated_at``), never ``trading_accounts.last_sync_at`` (stamped even when the
positionbook read was refused); an account never read, or older than ``stale_after``, is unknown, never 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from algomirror.db.models import (
    EngineCommand,
    MirrorAcceptance,
    Position,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.db.models.enums import OPEN_RUN_STATUSES
from algomirror.domain.mirror import Key, MirrorRow, compare, net_of_others
from algomirror.engine.mirror import MARKET_FINISHED_AT, MIRROR_ORDER

_INTENDS_PLANNED = ("pending",)
_INTENDS_HELD = ("active", "exiting", "error")
# An execution in these states has orders on their way: its row is not corrected meanwhile.
_IN_FLIGHT = {"pending": "orders in flight", "exiting": "exit in progress"}
# The most mirror-check corrections one poll reads (newest first; older ones are long in the positions).
_CORRECTIONS_READ = 200


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account's positions snapshot: ``as_of`` its newest positionbook fetch (None: none stored),
    ``stale`` when too old to compare (then its rows are unknown)."""

    account_id: int
    account_name: str
    as_of: datetime | None
    age_seconds: int | None
    stale: bool


@dataclass
class RunCheck:
    """One open run: its accounts' snapshots and the rows (sorted by account, symbol)."""

    run_id: int
    strategy_id: int
    strategy_name: str
    status: str
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    rows: list[MirrorRow] = field(default_factory=list)
    # Rows with a "Bring in line" order still running, or finished but not yet in a positionbook read
    # that started after it: key → command id. No second correction is offered meanwhile.
    corrections: dict[Key, int] = field(default_factory=dict)
    # Keys another open run of the user also holds: key → those strategies' names.
    shared: dict[Key, list[str]] = field(default_factory=dict)
    # Keys with an execution of this run whose orders are on their way: key → why.
    in_flight: dict[Key, str] = field(default_factory=dict)
    # Keys with a leg of this run in error: key → the execution id (resolved on the run page).
    error_legs: dict[Key, int] = field(default_factory=dict)

    @property
    def drifts(self) -> list[MirrorRow]:
        return [r for r in self.rows if r.is_drift and not r.accepted]

    @property
    def unknown(self) -> list[MirrorRow]:
        return [r for r in self.rows if r.kind == "unknown"]

    def blocked(self, row: MirrorRow) -> str | None:
        """Why neither Bring in line nor Accept may act on ``row`` now (None: they may). The same rule
        hides the buttons and refuses the POSTs."""
        if row.key in self.corrections:
            return "correction requested"
        if row.key in self.error_legs:
            return "leg in error: resolve it on the run page"
        if self.status == "entering":
            return "entry still running"
        if self.status == "exiting":
            return "exit in progress"
        if row.key in self.in_flight:
            return self.in_flight[row.key]
        if row.key in self.shared:
            return "shared with " + ", ".join(self.shared[row.key])
        return None


def _signed(action: str | None, units: int) -> int:
    return units if (action or "").upper() == "BUY" else -units


@dataclass
class _Intended:
    """What every open run intends, and per run which keys are in flight or in error."""

    units: dict[int, dict[Key, int]] = field(default_factory=lambda: defaultdict(dict))
    in_flight: dict[int, dict[Key, str]] = field(default_factory=lambda: defaultdict(dict))
    errors: dict[int, dict[Key, int]] = field(default_factory=lambda: defaultdict(dict))


def _intended(session: Session, run_ids: list[int]) -> _Intended:
    found = _Intended()
    rows = session.execute(
        select(StrategyExecution, StrategyLeg.action)
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .where(StrategyExecution.run_id.in_(run_ids))
        .order_by(StrategyExecution.id)
    ).all()
    for execution, action in rows:
        if not execution.symbol or not execution.exchange or execution.run_id is None:
            continue
        key: Key = (execution.account_id, execution.symbol, execution.exchange, execution.product or "MIS")
        units = 0
        if execution.status in _INTENDS_PLANNED:
            units = execution.planned_quantity or 0
        elif execution.status in _INTENDS_HELD:
            units = execution.filled_quantity - execution.exited_quantity
        wanted = found.units[execution.run_id]
        wanted[key] = wanted.get(key, 0) + _signed(action, units)
        if execution.status in _IN_FLIGHT:
            found.in_flight[execution.run_id].setdefault(key, _IN_FLIGHT[execution.status])
        if execution.status == "error":
            found.errors[execution.run_id].setdefault(key, execution.id)
    return found


def _snapshots(
    session: Session, user_id: int, account_ids: set[int], *, now: datetime, stale_after: timedelta
) -> dict[int, Snapshot]:
    if not account_ids:
        return {}
    newest: dict[int, datetime | None] = dict(
        session.execute(
            select(Position.account_id, func.max(Position.updated_at))
            .where(Position.account_id.in_(account_ids))
            .group_by(Position.account_id)
        )
        .tuples()
        .all()
    )
    accounts = session.execute(
        select(TradingAccount.id, TradingAccount.account_name, TradingAccount.positions_synced_at).where(
            TradingAccount.id.in_(account_ids), TradingAccount.user_id == user_id
        )
    ).all()
    found = {}
    for account_id, name, synced_at in accounts:
        # The positionbook's own fetch time: the account's last good read (an empty book has no rows),
        # else its newest row's stamp; neither: never read, unknown.
        candidates = [t for t in (synced_at, newest.get(account_id)) if t is not None]
        as_of = max(candidates) if candidates else None
        age = None if as_of is None else max(0, int((now - as_of).total_seconds()))
        stale = as_of is None or now - as_of > stale_after
        found[account_id] = Snapshot(account_id, name, as_of, age, stale)
    return found


def _broker(
    session: Session, snapshots: dict[int, Snapshot]
) -> dict[int, dict[tuple[str, str, str], int] | None]:
    fresh = [a for a, s in snapshots.items() if not s.stale]
    held: dict[int, dict[tuple[str, str, str], int] | None] = dict.fromkeys(snapshots)
    for account_id in fresh:
        held[account_id] = {}
    if fresh:
        rows = session.execute(
            select(
                Position.account_id, Position.symbol, Position.exchange, Position.product, Position.quantity
            ).where(Position.account_id.in_(fresh))
        ).all()
        for account_id, symbol, exchange, product, quantity in rows:
            positions = held[account_id]
            assert positions is not None
            positions[(symbol, exchange, product)] = quantity
    return held


def check_runs(
    session: Session,
    user_id: int,
    *,
    now: datetime,
    stale_after: timedelta,
    run_id: int | None = None,
    read_margin: timedelta = timedelta(0),
    commands_since: datetime | None = None,
) -> list[RunCheck]:
    """The user's open runs (``run_id``: that one only) with their mirror rows, newest run first.

    ``now`` (aware, the clock the sync stamps positions by) gives the snapshots' ages; older than
    ``stale_after`` is unknown. ``read_margin`` (same clock) is the longest a positionbook read can
    take: a finished correction is shown as requested until a read stamped more than that after the
    command finished (so one that started after it) is stored. ``commands_since`` (wall clock, like
    ``engine_commands.created_at``) bounds the corrections read."""
    query = (
        select(StrategyRun.id, StrategyRun.strategy_id, Strategy.name, StrategyRun.status)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(Strategy.user_id == user_id, StrategyRun.ended_at.is_(None))
        .where(StrategyRun.status.in_(OPEN_RUN_STATUSES))
        .order_by(StrategyRun.id.desc())
    )
    every = [RunCheck(r.id, r.strategy_id, r.name, r.status) for r in session.execute(query).all()]
    runs = [r for r in every if run_id is None or r.run_id == run_id]
    if not runs:
        return []
    # Every open run of the user, not only those shown: the others' share of a position is subtracted.
    intended = _intended(session, [r.run_id for r in every])
    names = {r.run_id: r.strategy_name for r in every}
    shown = {r.run_id for r in runs}
    accounts = {key[0] for rid in shown for key in intended.units.get(rid, {})}
    snapshots = _snapshots(session, user_id, accounts, now=now, stale_after=stale_after)
    broker = _broker(session, snapshots)
    accepted: dict[int, list[tuple[Key, int, int]]] = defaultdict(list)
    for row in session.scalars(
        select(MirrorAcceptance).where(
            MirrorAcceptance.user_id == user_id, MirrorAcceptance.run_id.in_(shown)
        )
    ):
        key: Key = (row.account_id, row.symbol, row.exchange, row.product)
        accepted[row.run_id].append((key, row.broker_quantity, row.intended_quantity))
    corrections = _corrections(session, user_id, shown, since=commands_since)
    for run in runs:
        wanted = {k: v for k, v in intended.units.get(run.run_id, {}).items() if k[0] in snapshots}
        run_accounts = {k[0] for k in wanted}
        others: dict[Key, int] = defaultdict(int)
        for other_id, other_units in intended.units.items():
            if other_id == run.run_id:
                continue
            for key, units in other_units.items():
                if key[0] in run_accounts and units:
                    others[key] += units
                    holders = run.shared.setdefault(key, [])
                    if names[other_id] not in holders:
                        holders.append(names[other_id])
        run.snapshots = {a: snapshots[a] for a in sorted(run_accounts)}
        run.rows = compare(
            wanted,
            net_of_others({a: broker[a] for a in run_accounts}, others),
            run_symbols={(k[1], k[2]) for k in wanted},
            accepted=accepted.get(run.run_id, ()),
        )
        run.in_flight = dict(intended.in_flight.get(run.run_id, {}))
        run.error_legs = dict(intended.errors.get(run.run_id, {}))
        for key, (command_id, finished) in corrections.get(run.run_id, {}).items():
            snapshot = run.snapshots.get(key[0])
            as_of = snapshot.as_of if snapshot is not None else None
            if finished is None or as_of is None or as_of <= finished + read_margin:
                run.corrections[key] = command_id
    return runs


def _market_finished(status: str, result: object) -> datetime | None:
    """When a done correction finished, on the market clock (the engine writes it into the result);
    None while it runs. A done command without the stamp (written before it existed) counts as long
    finished (``datetime.min``)."""
    if status != "done":
        return None
    raw = result.get(MARKET_FINISHED_AT) if isinstance(result, dict) else None
    if not isinstance(raw, str):
        return datetime.min.replace(tzinfo=UTC)
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _corrections(
    session: Session, user_id: int, run_ids: set[int], *, since: datetime | None
) -> dict[int, dict[Key, tuple[int, datetime | None]]]:
    """The newest mirror-check correction per shown run and key: (command id, finished at on the market
    clock, or None while pending/running). Reads at most :data:`_CORRECTIONS_READ` commands, newest
    first, created since ``since`` (wall clock)."""
    found: dict[int, dict[Key, tuple[int, datetime | None]]] = defaultdict(dict)
    query = (
        select(EngineCommand.id, EngineCommand.payload, EngineCommand.status, EngineCommand.result)
        .where(EngineCommand.user_id == user_id, EngineCommand.kind == MIRROR_ORDER)
        .where(EngineCommand.status.in_(("pending", "running", "done")))
        .order_by(EngineCommand.id.desc())
        .limit(_CORRECTIONS_READ)
    )
    if since is not None:
        query = query.where(EngineCommand.created_at >= since)
    for command_id, payload, status, result in session.execute(query).all():
        if not isinstance(payload, dict) or payload.get("reason") != "mirror_check":
            continue
        run_id, accounts = payload.get("run_id"), payload.get("accounts")
        if run_id not in run_ids or not isinstance(accounts, list) or len(accounts) != 1:
            continue
        account_id = accounts[0].get("account_id") if isinstance(accounts[0], dict) else None
        if not isinstance(account_id, int):
            continue
        key: Key = (
            account_id,
            str(payload.get("symbol")),
            str(payload.get("exchange")),
            str(payload.get("product")),
        )
        # Newest first: the first seen per key is its latest correction.
        found[run_id].setdefault(key, (command_id, _market_finished(status, result)))
    return found


def find_row(check: RunCheck, account_id: int, symbol: str, exchange: str, product: str) -> MirrorRow | None:
    """The run's row for one account × (symbol, exchange, product), or None."""
    for row in check.rows:
        if row.key == (account_id, symbol, exchange, product):
            return row
    return None


__all__ = ["RunCheck", "Snapshot", "check_runs", "find_row"]
