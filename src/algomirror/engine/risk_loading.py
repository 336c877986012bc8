"""Loading the risk engine's open runs (PRODUCT §6): per open run a cheap signature (status, strategy
``updated_at``, execution count, newest execution ``updated_at``) telling which runs changed, and the read
of a changed run with its strategy's settings, its current executions (never closed history), its
latches (run columns; ``risk_events`` per account in ``per_account`` scope; leg hit times) and its newest
P&L sample. Reading fixes what is due once and stores it in the same transaction: a leg's SL/target
levels from its entry average, and the trailing stop armed at entry completion.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from algomirror.db.models import (
    RiskEvent,
    RunPnlSample,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
)
from algomirror.db.session import Database
from algomirror.domain.risk import TrailingState, initial_trailing_stop, leg_levels
from algomirror.engine.risk_state import HELD, LATCHES, ExecutionState, RunState

log = logging.getLogger(__name__)


def read_signatures(database: Database) -> dict[int, tuple[Any, ...]]:
    """Per open run: (status, strategy updated_at, executions, newest execution updated_at)."""
    with database.session_factory() as session:
        rows = session.execute(
            select(
                StrategyRun.id,
                StrategyRun.status,
                Strategy.updated_at,
                func.count(StrategyExecution.id),
                func.max(StrategyExecution.updated_at),
            )
            .join(Strategy, Strategy.id == StrategyRun.strategy_id)
            .outerjoin(StrategyExecution, StrategyExecution.run_id == StrategyRun.id)
            .where(StrategyRun.ended_at.is_(None))
            .group_by(StrategyRun.id, StrategyRun.status, Strategy.updated_at)
        ).all()
    return {int(r[0]): (r[1], r[2], int(r[3]), r[4]) for r in rows}


def read_runs(
    database: Database, run_ids: Sequence[int], signatures: dict[int, tuple[Any, ...]]
) -> dict[int, RunState]:
    """Read ``run_ids`` with their executions; arm trailing stops and fix leg levels not yet stored."""
    result: dict[int, RunState] = {}
    with database.session() as session:
        for run_id in run_ids:
            loaded = read_run(session, run_id, signatures[run_id])
            if loaded is not None:
                result[run_id] = loaded
    return result


def read_run(session: Session, run_id: int, signature: tuple[Any, ...]) -> RunState | None:
    """One open run with its held executions (None when it ended or its strategy is gone)."""
    row = session.get(StrategyRun, run_id)
    if row is None or row.ended_at is not None:
        return None
    strategy = session.get(Strategy, row.strategy_id)
    if strategy is None:
        return None
    state = RunState(
        id=row.id,
        strategy_id=strategy.id,
        user_id=strategy.user_id,
        name=strategy.name,
        status=row.status,
        signature=signature,
        monitoring=strategy.risk_monitoring_enabled,
        scope=strategy.risk_scope,
        interval=float(max(strategy.risk_check_interval, 1)),
        max_loss=strategy.max_loss,
        max_profit=strategy.max_profit,
        auto_exit_loss=strategy.auto_exit_on_max_loss,
        auto_exit_profit=strategy.auto_exit_on_max_profit,
        trailing_kind=strategy.trailing_sl_type,
        trailing_value=strategy.trailing_sl,
        entry_completed=row.entry_completed_at is not None,
        sample_at=session.scalar(select(func.max(RunPnlSample.at)).where(RunPnlSample.run_id == run_id)),
    )
    for code, (at, _) in LATCHES.items():
        if getattr(row, at) is not None and strategy.risk_scope != "per_account":
            state.fired.add((code, None))
    legs = {
        leg.id: leg
        for leg in session.scalars(select(StrategyLeg).where(StrategyLeg.strategy_id == strategy.id))
    }
    executions = session.scalars(
        select(StrategyExecution).where(
            StrategyExecution.run_id == run_id, StrategyExecution.status.in_(HELD)
        )
    ).all()
    if strategy.risk_scope == "per_account":
        fired = session.execute(
            select(RiskEvent.event_type, StrategyExecution.account_id)
            .join(StrategyExecution, StrategyExecution.id == RiskEvent.strategy_execution_id)
            .where(RiskEvent.run_id == run_id, RiskEvent.event_type.in_(list(LATCHES)))
            .distinct()
        ).all()
        state.fired.update((str(code), int(account)) for code, account in fired)
        if row.trailing_triggered_at is not None:
            state.fired.add(("trailing_stop", None))
    for e in executions:
        leg = legs.get(e.leg_id)
        if leg is None or not e.symbol or not e.exchange:
            continue
        side: Literal["BUY", "SELL"] = "SELL" if (leg.action or "").upper() == "SELL" else "BUY"
        held = ExecutionState(
            id=e.id,
            run_id=run_id,
            account_id=e.account_id,
            leg_id=e.leg_id,
            symbol=e.symbol,
            exchange=e.exchange,
            side=side,
            status=e.status,
            filled=e.filled_quantity,
            exited=e.exited_quantity,
            entry_price=e.entry_price,
            exit_price=e.exit_price,
            monitored=e.risk_monitoring_enabled,
            sl_type=leg.stop_loss_type,
            sl_value=leg.stop_loss_value,
            tp_type=leg.take_profit_type,
            tp_value=leg.take_profit_value,
            trailing_kind=leg.trailing_type if leg.enable_trailing else None,
            trailing_value=leg.trailing_value if leg.enable_trailing else None,
            stop_loss=e.stop_loss_price,
            target=e.take_profit_price,
            best=e.trailing_best_price,
            hit=e.sl_hit_at is not None or e.tp_hit_at is not None,
        )
        if e.entry_price is not None and e.status in ("active", "exiting"):
            fix_levels(e, held)
        state.executions[e.id] = held
    arm_trailing(row, state)
    return state


def fix_levels(row: StrategyExecution, held: ExecutionState) -> None:
    """Leg levels from the entry average, once (stored on the execution)."""
    if row.stop_loss_price is not None or row.take_profit_price is not None or held.entry_price is None:
        return
    if held.sl_type is None and held.tp_type is None:
        return
    try:
        levels = leg_levels(
            held.side,
            held.entry_price,
            sl_type=held.sl_type,
            sl_value=held.sl_value,
            tp_type=held.tp_type,
            tp_value=held.tp_value,
        )
    except ValueError as exc:
        log.warning("risk: execution %s: leg levels not set: %s", held.id, exc)
        return
    row.stop_loss_price, row.take_profit_price = levels.stop_loss, levels.target
    held.stop_loss, held.target = levels.stop_loss, levels.target


def arm_trailing(row: StrategyRun, state: RunState) -> None:
    """The trailing state: stored, or armed now that the entry is complete (E and I fixed)."""
    if state.trailing_value is None or not state.entry_completed:
        return
    if row.trailing_initial_stop is not None:
        initial = row.trailing_initial_stop
        peak = row.peak_pnl if row.peak_pnl is not None else Decimal(0)
        level = row.trailing_stop_level if row.trailing_stop_level is not None else initial + peak
        state.trailing = TrailingState(initial_stop=initial, peak=peak, level=level)
        state.trailing_stored = state.trailing
        return
    if row.base_premium is None:
        return
    per_account: dict[int, int] = {}
    for e in state.executions.values():
        if e.filled > 0:
            per_account[e.account_id] = min(per_account.get(e.account_id, e.filled), e.filled)
    try:
        initial = initial_trailing_stop(
            state.trailing_kind,
            state.trailing_value,
            base_premium=row.base_premium,
            unit_quantity=sum(per_account.values()),
        )
    except ValueError as exc:
        log.warning("risk: run %s: trailing stop not armed: %s", state.id, exc)
        return
    state.trailing = TrailingState.armed(initial)
    row.trailing_initial_stop, row.peak_pnl, row.trailing_stop_level = initial, Decimal(0), initial
    state.trailing_stored = state.trailing


def merge_memory(old: RunState, fresh: RunState) -> None:
    """Carry into ``fresh`` (a reloaded run) what only memory knows of ``old``: rules fired, executions
    claimed, sweep / alert / snapshot / sample times, a trailing peak ahead of the stored one, leg hits,
    leg levels not yet written and legs whose settings failed."""
    fresh.fired |= old.fired
    fresh.claimed |= old.claimed
    fresh.last_sweep, fresh.unknown_since, fresh.unknown_alerted = (
        old.last_sweep,
        old.unknown_since,
        old.unknown_alerted,
    )
    fresh.snapshot_at, fresh.marks_changed = old.snapshot_at, True
    if old.sample_at is not None and (fresh.sample_at is None or old.sample_at > fresh.sample_at):
        fresh.sample_at = old.sample_at
    if old.trailing is not None and fresh.trailing is not None and old.trailing.peak >= fresh.trailing.peak:
        fresh.trailing, fresh.trailing_stored = old.trailing, old.trailing_stored
    for e in fresh.executions.values():
        before = old.executions.get(e.id)
        if before is None:
            continue
        e.hit = e.hit or before.hit
        e.leg_error = e.leg_error or before.leg_error
        if before.levels_dirty:
            e.stop_loss, e.best, e.levels_dirty = before.stop_loss, before.best, True


__all__ = ["arm_trailing", "fix_levels", "merge_memory", "read_run", "read_runs", "read_signatures"]
