"""The risk engine's writes (PRODUCT §6.3–§6.9): the breach's one transaction — the conditional latch (a
run's ``*_triggered_at`` or a leg's ``sl_hit_at`` / ``tp_hit_at``, set only while NULL), the trailing
state and leg levels, one ``risk_events`` row per affected execution (one ``alert_only`` row when
auto-exit is off), an activity entry, an alert and the durable ``exit`` command (unique token
``risk:{run}:{rule}`` / ``risk:{run}:{account}:{rule}`` / ``risk:exec:{execution}:{rule}``) — and the
throttled state writes (trailing state, leg levels, P&L samples) and alerts.

Every function runs in a worker thread (the engine loop hands it over with ``asyncio.to_thread``); money
is Decimal rupees, times aware UTC from the market clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from algomirror.db.models import (
    ActivityLog,
    EngineCommand,
    RiskEvent,
    RunPnlSample,
    StrategyExecution,
    StrategyRun,
)
from algomirror.db.session import Database
from algomirror.domain.risk import TrailingState
from algomirror.engine.alerts import raise_alert
from algomirror.engine.command_rows import rowcount
from algomirror.engine.exit_planning import EXIT_COMMAND, exit_payload
from algomirror.engine.risk_state import CLAIMABLE, LATCHES, RISK_ALERT_KIND, Breach, ExecutionState, RunState


@dataclass(frozen=True, slots=True)
class BreachCommand:
    """The exit command a breach wrote: its id, its payload, and whether the breach's own transaction
    claimed it (``running``: the caller runs it at once; else the exit executor's claim decides)."""

    id: int
    payload: dict[str, Any]
    claimed: bool


@dataclass(frozen=True, slots=True)
class BreachWrite:
    """One breach as the engine loop saw it, for :func:`write_breach` in a worker thread: the rule's
    ``breach`` of ``run``, the executions it exits (or names), the account of a per-account rule, the
    execution and ``price`` of a leg rule, the trailing state and leg ``levels`` (execution id → (stop,
    best), ₹) to store with it, and ``claim_at`` (the command clock) to claim its exit command at."""

    run: RunState
    breach: Breach
    execution_ids: list[int]
    account_id: int | None
    execution: ExecutionState | None
    price: Decimal | None
    trailing: TrailingState | None
    levels: dict[int, tuple[Decimal | None, Decimal | None]]
    claim_at: datetime | None = None


def write_breach(
    database: Database, now: datetime, write: BreachWrite
) -> tuple[BreachCommand | None, dict[str, Any]] | None:
    """The breach's one transaction at ``now`` (market clock): the trailing state and leg levels
    first, the latch, the risk events, an activity entry, an alert and (auto-exit) the exit command,
    claimed ``running`` at ``write.claim_at`` when given — the caller then runs it at once, without a
    claim of its own; a crash before it ends leaves it to the next start's recovery.
    Returns (the command or None, the live payload), or None when it was already recorded or nothing is
    left to exit. Raises SQLAlchemyError (nothing committed)."""
    run, breach, execution_ids, execution = write.run, write.breach, write.execution_ids, write.execution
    account_id, price, claim_at = write.account_id, write.price, write.claim_at
    try:
        with database.session() as session:
            write_trailing(session, run.id, write.trailing)
            write_levels(session, write.levels)
            targets = list(
                session.scalars(
                    select(StrategyExecution.id)
                    .where(
                        StrategyExecution.id.in_(execution_ids),
                        StrategyExecution.status.in_(CLAIMABLE),
                    )
                    .order_by(StrategyExecution.id)
                )
            )
            if breach.auto_exit and not targets:
                return None
            if not _latch(session, run.id, breach, account_id, execution, execution_ids, price, now):
                return None
            action = "exit_initiated" if breach.auto_exit else "alert_only"
            recorded = targets if breach.auto_exit else (targets or execution_ids)[:1]
            account = account_id if execution is None else execution.account_id
            details: dict[str, Any] = {
                "run_id": run.id,
                "account_id": account,
                "pnl": str(breach.pnl),
                "detail": breach.detail,
                "executions": execution_ids,
            }
            # One executemany for every affected execution (fifty of them on a breach of fifty accounts).
            text_details = json.dumps(details)
            if recorded:
                session.execute(
                    insert(RiskEvent),
                    [
                        {
                            "strategy_execution_id": execution_id,
                            "run_id": run.id,
                            "event_type": breach.code,
                            "trigger_value": breach.pnl if execution is None else None,
                            "threshold_value": breach.threshold,
                            "action_taken": action,
                            "details": text_details,
                            "created_at": now,
                        }
                        for execution_id in recorded
                    ],
                )
            where = f"run {run.id} of {run.name}"
            outcome = "exit requested" if breach.auto_exit else "alert only (auto-exit off)"
            text = f"{breach.detail}; {outcome}"
            session.execute(
                insert(ActivityLog).values(
                    user_id=run.user_id,
                    account_id=account,
                    action=f"risk_{breach.code}",
                    details=f"{where}: {text}"[:2000],
                    timestamp=now,
                )
            )
            raise_alert(
                session,
                user_id=run.user_id,
                kind=RISK_ALERT_KIND,
                title=f"{run.name}: {breach.code.replace('_', ' ')}",
                details=text,
                now=now,
                severity="info" if breach.auto_exit else "warning",
                account_id=account,
                run_id=run.id,
                execution_id=execution.id if execution is not None else None,
            )
            command: BreachCommand | None = None
            if breach.auto_exit:
                command = _insert_command(session, run, breach, account_id, execution, claim_at)
            payload = {**details, "rule": breach.code, "action": action, "message": text}
            return command, payload
    except IntegrityError:
        # The command's token exists: this breach was recorded before (the whole transaction is undone).
        return None


def _latch(
    session: Session,
    run_id: int,
    breach: Breach,
    account_id: int | None,
    execution: ExecutionState | None,
    execution_ids: list[int],
    price: Decimal | None,
    now: datetime,
) -> bool:
    """The conditional latch: True for the one caller that set it."""
    if execution is not None:
        at, value = (
            ("tp_hit_at", "tp_hit_price") if breach.code == "take_profit" else ("sl_hit_at", "sl_hit_price")
        )
        won = session.execute(
            update(StrategyExecution)
            .where(StrategyExecution.id == execution.id, getattr(StrategyExecution, at).is_(None))
            .values({at: now, value: price})
            .execution_options(synchronize_session=False)
        )
        return rowcount(won) == 1
    columns = LATCHES.get(breach.code)
    if account_id is not None:
        # Per account: the run's latch records the first account; each account fires once (its
        # events are the record; the command token guards the exit too).
        seen = session.scalar(
            select(func.count(RiskEvent.id)).where(
                RiskEvent.run_id == run_id,
                RiskEvent.event_type == breach.code,
                RiskEvent.strategy_execution_id.in_(execution_ids),
            )
        )
        if seen:
            return False
        if columns is not None:
            session.execute(
                update(StrategyRun)
                .where(StrategyRun.id == run_id, getattr(StrategyRun, columns[0]).is_(None))
                .values({columns[0]: now, columns[1]: breach.pnl})
                .execution_options(synchronize_session=False)
            )
        return True
    if columns is None:
        return True  # an added rule without a latch column: the command token is its guard
    won = session.execute(
        update(StrategyRun)
        .where(StrategyRun.id == run_id, getattr(StrategyRun, columns[0]).is_(None))
        .values({columns[0]: now, columns[1]: breach.pnl})
        .execution_options(synchronize_session=False)
    )
    return rowcount(won) == 1


def _insert_command(
    session: Session,
    run: RunState,
    breach: Breach,
    account_id: int | None,
    execution: ExecutionState | None,
    claim_at: datetime | None,
) -> BreachCommand:
    """The breach's ``exit`` command, inserted already ``running`` (started at ``claim_at``) when the
    caller runs it at once: a row born in this transaction has no other claimant, and its unique token
    makes a second breach's transaction fail. The ids come from the run the engine loaded for its user,
    so they need no ownership read (the web's :func:`request_exit` does that)."""
    if execution is not None:
        token = f"risk:exec:{execution.id}:{breach.code}"
        payload = exit_payload(
            "execution",
            reason=breach.code,
            execution_id=execution.id,
            run_id=execution.run_id,
            account_id=execution.account_id,
        )
    elif account_id is not None:
        token = f"risk:{run.id}:{account_id}:{breach.code}"
        payload = exit_payload("account", reason=breach.code, run_id=run.id, account_id=account_id)
    else:
        token = f"risk:{run.id}:{breach.code}"
        payload = exit_payload("run", reason=breach.code, run_id=run.id)
    values: dict[str, Any] = {
        "user_id": run.user_id,
        "kind": EXIT_COMMAND,
        "payload": payload,
        "token": token,
    }
    if claim_at is not None:
        values.update(status="running", started_at=claim_at, updated_at=claim_at)
    command_id = session.scalar(insert(EngineCommand).values(values).returning(EngineCommand.id))
    if command_id is None:  # not expected: an INSERT … RETURNING returns its row or raises
        raise RuntimeError(f"the exit command {token} was not stored")
    return BreachCommand(command_id, payload, claim_at is not None)


def write_trailing(session: Session, run_id: int, state: TrailingState | None) -> None:
    """Store a run's trailing state (initial stop, peak, level; ₹); nothing for None."""
    if state is None:
        return
    session.execute(
        update(StrategyRun)
        .where(StrategyRun.id == run_id)
        .values(
            trailing_initial_stop=state.initial_stop,
            peak_pnl=state.peak,
            trailing_stop_level=state.level,
        )
        .execution_options(synchronize_session=False)
    )


def write_levels(session: Session, levels: dict[int, tuple[Decimal | None, Decimal | None]]) -> None:
    """Store leg levels: execution id → (stop-loss price, trailing best price)."""
    for execution_id, (stop, best) in levels.items():
        session.execute(
            update(StrategyExecution)
            .where(StrategyExecution.id == execution_id)
            .values(stop_loss_price=stop, trailing_best_price=best)
            .execution_options(synchronize_session=False)
        )


def levels_of(run: RunState) -> dict[int, tuple[Decimal | None, Decimal | None]]:
    """The run's leg levels not yet written (execution id → (stop loss, best))."""
    return {e.id: (e.stop_loss, e.best) for e in run.executions.values() if e.levels_dirty}


def write_state(
    database: Database,
    trailing: dict[int, TrailingState],
    levels: dict[int, tuple[Decimal | None, Decimal | None]],
    samples: dict[int, tuple[datetime, Decimal]],
) -> None:
    """One transaction: trailing states (run id → state), leg levels and P&L samples (run id → (market
    time, ₹); a row already stored at that instant is kept). Raises SQLAlchemyError (nothing written)."""
    with database.session() as session:
        for run_id, state in trailing.items():
            write_trailing(session, run_id, state)
        write_levels(session, levels)
        for run_id, (at, pnl) in samples.items():
            # One writer per database (the engine lock); a row at this instant is a restart's own.
            exists = session.scalar(
                select(RunPnlSample.id).where(RunPnlSample.run_id == run_id, RunPnlSample.at == at)
            )
            if exists is None:
                session.add(RunPnlSample(run_id=run_id, at=at, pnl=pnl))


def write_alert(database: Database, run: RunState, title: str, text: str, now: datetime) -> None:
    """A risk alert about ``run`` (e.g. its P&L unknown too long)."""
    with database.session() as session:
        raise_alert(
            session,
            user_id=run.user_id,
            kind=RISK_ALERT_KIND,
            title=title,
            details=text,
            now=now,
            run_id=run.id,
        )


__all__ = [
    "BreachCommand",
    "levels_of",
    "write_alert",
    "write_breach",
    "write_levels",
    "write_state",
    "write_trailing",
]
