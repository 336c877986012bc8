"""The mirror check's reads (issue 11 item 12): per open run of a user, each account's intended legs
against its synced positionbook, with every drift (:mod:`algomirror.domain.mirror`).

Intended (signed units, BUY +, SELL −) per account × (symbol, exchange, product): Σ over the run's
executions on that account, ``pending`` → planned quantity, ``active``/``exiting`` → filled − exited;
other statuses intend nothing (their symbols still count as the run's). The broker side is the
``positions`` table the engine's sync writes; an account whose snapshot is older than ``stale_after``
(or never taken) is unknown, never 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
from algomirror.domain.mirror import Key, MirrorRow, compare
from algomirror.engine.mirror import MIRROR_ORDER

OPEN_RUN_STATUSES = ("entering", "active", "exiting")
_INTENDS_PLANNED = ("pending",)
_INTENDS_HELD = ("active", "exiting")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account's positions snapshot: ``as_of`` its newest fetch (None: never), ``stale`` when too
    old to compare (then its rows are unknown)."""

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
    # Rows with a "Bring in line" order still running, or finished after the account's snapshot (the
    # positions do not show it yet): key → command id. No second correction is offered meanwhile.
    corrections: dict[Key, int] = field(default_factory=dict)

    @property
    def drifts(self) -> list[MirrorRow]:
        return [r for r in self.rows if r.is_drift and not r.accepted]

    @property
    def unknown(self) -> list[MirrorRow]:
        return [r for r in self.rows if r.kind == "unknown"]


def _signed(action: str | None, units: int) -> int:
    return units if (action or "").upper() == "BUY" else -units


def _intended(session: Session, run_ids: list[int]) -> dict[int, dict[Key, int]]:
    result: dict[int, dict[Key, int]] = defaultdict(dict)
    rows = session.execute(
        select(StrategyExecution, StrategyLeg.action)
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .where(StrategyExecution.run_id.in_(run_ids))
    ).all()
    for execution, action in rows:
        if not execution.symbol or not execution.exchange:
            continue
        key: Key = (execution.account_id, execution.symbol, execution.exchange, execution.product or "MIS")
        units = 0
        if execution.status in _INTENDS_PLANNED:
            units = execution.planned_quantity or 0
        elif execution.status in _INTENDS_HELD:
            units = execution.filled_quantity - execution.exited_quantity
        wanted = result[execution.run_id]
        wanted[key] = wanted.get(key, 0) + _signed(action, units)
    return result


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
        select(TradingAccount.id, TradingAccount.account_name, TradingAccount.last_sync_at).where(
            TradingAccount.id.in_(account_ids), TradingAccount.user_id == user_id
        )
    ).all()
    found = {}
    for account_id, name, last_sync in accounts:
        times = [t for t in (last_sync, newest.get(account_id)) if t is not None]
        as_of = max(times) if times else None
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
) -> list[RunCheck]:
    """The user's open runs (``run_id``: that one only) with their mirror rows, newest run first.
    ``now`` (aware) gives the snapshots' ages; older than ``stale_after`` is unknown."""
    query = (
        select(StrategyRun.id, StrategyRun.strategy_id, Strategy.name, StrategyRun.status)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(Strategy.user_id == user_id, StrategyRun.ended_at.is_(None))
        .where(StrategyRun.status.in_(OPEN_RUN_STATUSES))
        .order_by(StrategyRun.id.desc())
    )
    if run_id is not None:
        query = query.where(StrategyRun.id == run_id)
    runs = [RunCheck(r.id, r.strategy_id, r.name, r.status) for r in session.execute(query).all()]
    if not runs:
        return []
    intended = _intended(session, [r.run_id for r in runs])
    accounts = {key[0] for wanted in intended.values() for key in wanted}
    snapshots = _snapshots(session, user_id, accounts, now=now, stale_after=stale_after)
    broker = _broker(session, snapshots)
    accepted: dict[int, list[tuple[Key, int, int]]] = defaultdict(list)
    for row in session.scalars(
        select(MirrorAcceptance).where(
            MirrorAcceptance.user_id == user_id, MirrorAcceptance.run_id.in_([r.run_id for r in runs])
        )
    ):
        key: Key = (row.account_id, row.symbol, row.exchange, row.product)
        accepted[row.run_id].append((key, row.broker_quantity, row.intended_quantity))
    corrections = _corrections(session, user_id, [r.run_id for r in runs])
    for run in runs:
        wanted = {k: v for k, v in intended.get(run.run_id, {}).items() if k[0] in snapshots}
        run_accounts = {k[0] for k in wanted}
        run.snapshots = {a: snapshots[a] for a in sorted(run_accounts)}
        run.rows = compare(
            wanted,
            {a: broker[a] for a in run_accounts},
            run_symbols={(k[1], k[2]) for k in wanted},
            accepted=accepted.get(run.run_id, ()),
        )
        for key, (command_id, finished) in corrections.get(run.run_id, {}).items():
            snapshot = run.snapshots.get(key[0])
            as_of = snapshot.as_of if snapshot is not None else None
            if finished is None or as_of is None or finished > as_of:
                run.corrections[key] = command_id
    return runs


def _corrections(
    session: Session, user_id: int, run_ids: list[int]
) -> dict[int, dict[Key, tuple[int, datetime | None]]]:
    """The newest mirror-check correction per run and key: (command id, finished at or None)."""
    found: dict[int, dict[Key, tuple[int, datetime | None]]] = defaultdict(dict)
    rows = session.execute(
        select(EngineCommand.id, EngineCommand.payload, EngineCommand.finished_at)
        .where(EngineCommand.user_id == user_id, EngineCommand.kind == MIRROR_ORDER)
        .where(EngineCommand.status.in_(("pending", "running", "done")))
        .order_by(EngineCommand.id)
    ).all()
    for command_id, payload, finished in rows:
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
        found[run_id][key] = (command_id, finished)
    return found


def find_row(check: RunCheck, account_id: int, symbol: str, exchange: str, product: str) -> MirrorRow | None:
    """The run's row for one account × (symbol, exchange, product), or None."""
    for row in check.rows:
        if row.key == (account_id, symbol, exchange, product):
            return row
    return None


__all__ = ["OPEN_RUN_STATUSES", "RunCheck", "Snapshot", "check_runs", "find_row"]
