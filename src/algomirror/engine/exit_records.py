"""The exit path's database side (PRODUCT §5.10, §6.7): which executions an ``exit`` command covers,
the one-owner claim, and what an exit attempt's outcome writes.

* :func:`claim_exit` — ``active → exiting`` by a conditional UPDATE that also numbers the attempt
  (``exit_retry_count + 1``): only one caller's update counts the row, so an open leg gets one exit.
  The attempt number is part of every exit intent's key (``exec:{id}:exit:{n}:{slice}``), so a retry of
  the same attempt re-finds its intents and cannot write new ones.
* :func:`finish_attempt` — once every slice of attempt ``n`` is terminal: fills from *all* exit intents
  of the execution (every attempt, also an entry unwind's), ``exited`` when they cover the filled
  quantity, else back to ``active`` with the broker's reason (the position is still open; nothing is
  ever sent beyond the open quantity).
* :func:`close_runs` — a run whose executions are all exited (or failed) ends ``closed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from algomirror.db.models import OrderIntent, Strategy, StrategyExecution, StrategyRun
from algomirror.db.session import Database
from algomirror.engine.command_rows import MAX_ERROR, rowcount
from algomirror.engine.order_driver import IntentRow

_AVERAGE = Decimal("0.0001")
# Executions an exit may still have to do something about (a pending one: cancel its working entries).
OPEN_STATUSES = ("pending", "active", "exiting")


@dataclass(frozen=True, slots=True)
class ExitState:
    """The exit-related facts of one execution, read when the command starts."""

    execution_id: int
    run_id: int
    status: str
    filled_quantity: int
    exited_quantity: int
    attempt: int

    @property
    def open_quantity(self) -> int:
        return max(self.filled_quantity - self.exited_quantity, 0)


def target_states(
    session: Session,
    user_id: int,
    *,
    scope: str,
    run_id: int | None = None,
    account_id: int | None = None,
    execution_id: int | None = None,
) -> list[ExitState]:
    """The user's open executions the scope covers (another user's ids select nothing)."""
    query = (
        select(StrategyExecution)
        .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
        .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
        .where(Strategy.user_id == user_id, StrategyExecution.status.in_(OPEN_STATUSES))
        .order_by(StrategyExecution.id)
    )
    if scope == "execution":
        query = query.where(StrategyExecution.id == execution_id)
    elif scope == "account":
        query = query.where(StrategyExecution.run_id == run_id, StrategyExecution.account_id == account_id)
    elif scope == "run":
        query = query.where(StrategyExecution.run_id == run_id)
    else:
        query = query.where(StrategyRun.ended_at.is_(None))
    return [
        ExitState(r.id, r.run_id, r.status, r.filled_quantity, r.exited_quantity, r.exit_retry_count)
        for r in session.scalars(query)
    ]


def read_state(database: Database, execution_id: int) -> ExitState | None:
    """One execution's exit facts as stored now."""
    with database.session_factory() as session:
        r = session.get(StrategyExecution, execution_id)
        if r is None:
            return None
        return ExitState(r.id, r.run_id, r.status, r.filled_quantity, r.exited_quantity, r.exit_retry_count)


def claim_exit(database: Database, execution_id: int, reason: str, detail: str) -> int | None:
    """Claim the exit of an ``active`` execution with an open quantity; returns the new attempt number
    for the one caller whose UPDATE counted the row, else None (another owner, or nothing open)."""
    with database.session() as session:
        won = session.execute(
            update(StrategyExecution)
            .where(
                StrategyExecution.id == execution_id,
                StrategyExecution.status == "active",
                StrategyExecution.filled_quantity > StrategyExecution.exited_quantity,
            )
            .values(
                status="exiting",
                exit_retry_count=StrategyExecution.exit_retry_count + 1,
                exit_reason=reason,
                exit_reason_detail=detail[:MAX_ERROR],
                error_message=None,
            )
            .execution_options(synchronize_session=False)
        )
        if rowcount(won) != 1:
            return None
        attempt = session.scalar(
            select(StrategyExecution.exit_retry_count).where(StrategyExecution.id == execution_id)
        )
        return int(attempt or 0)


def exit_intents(database: Database, execution_id: int) -> list[IntentRow]:
    """Every exit intent of the execution (all attempts), oldest first."""
    with database.session_factory() as session:
        rows = session.scalars(
            select(OrderIntent)
            .where(OrderIntent.execution_id == execution_id, OrderIntent.purpose == "exit")
            .order_by(OrderIntent.id)
        ).all()
        return [IntentRow.of(r) for r in rows]


def attempt_prefix(execution_id: int, attempt: int) -> str:
    """The key prefix of exit attempt ``attempt``'s slices."""
    return f"exec:{execution_id}:exit:{attempt}:"


def _average(rows: Sequence[IntentRow]) -> Decimal | None:
    priced = [(r.average_price, r.filled_quantity) for r in rows if r.filled_quantity and r.average_price]
    units = sum(q for _, q in priced)
    if not units:
        return None
    total = sum((p * q for p, q in priced), Decimal(0))
    return (total / units).quantize(_AVERAGE, rounding=ROUND_HALF_UP)


ExitResult = Literal["exited", "active", "open", "other"]


def finish_attempt(
    database: Database, execution_id: int, side: str, attempt: int, now: datetime
) -> ExitResult:
    """Write exit attempt ``attempt``'s outcome once all its slices are terminal (see the module
    docstring). ``open``: a slice is still unresolved (nothing but a note written); ``other``: the
    execution is no longer this attempt's (already finished by another caller)."""
    every = exit_intents(database, execution_id)
    mine = [r for r in every if r.key.startswith(attempt_prefix(execution_id, attempt))]
    with database.session() as session:
        row = session.get(StrategyExecution, execution_id, with_for_update=True)
        if row is None or row.status != "exiting" or row.exit_retry_count != attempt:
            return "exited" if row is not None and row.status == "exited" else "other"
        waiting = [r for r in mine if not r.terminal]
        if waiting:
            states = ", ".join(sorted({r.state for r in waiting}))
            row.error_message = (
                f"exit: waiting for {len(waiting)} order(s) ({states}) to be resolved; nothing is re-sent"
            )
            return "open"
        exited = sum(r.filled_quantity for r in every if r.terminal)
        order_ids = [r.order_id for r in every if r.order_id]
        price = _average([r for r in every if r.terminal])
        row.exit_order_ids = order_ids or None
        row.exit_order_id = order_ids[0] if order_ids else None
        row.exited_quantity = exited
        row.exit_price = price
        if any(r.filled_quantity for r in mine):
            row.exit_time = now
        if price is not None and row.entry_price is not None and exited:
            sign = 1 if side == "BUY" else -1
            row.realized_pnl = ((price - row.entry_price) * exited * sign).quantize(Decimal("0.01"))
        if exited >= row.filled_quantity:
            row.status = "exited"
            row.error_message = None
            return "exited"
        reasons = "; ".join(dict.fromkeys(r.rejection_reason for r in mine if r.rejection_reason))
        done = sum(r.filled_quantity for r in mine)
        row.status = "active"
        row.error_message = (
            f"exit attempt {attempt} filled {done} of {sum(r.quantity for r in mine)}: "
            f"{reasons or 'not filled'}; the position is still open"
        )[:MAX_ERROR]
        return "active"


def note(database: Database, execution_ids: Sequence[int], message: str, status: str | None = None) -> None:
    """Say on each execution why it was left as it is (only on those still in ``status`` if given: a
    row another caller has claimed meanwhile keeps its own story)."""
    with database.session() as session:
        for execution_id in execution_ids:
            row = session.get(StrategyExecution, execution_id, with_for_update=True)
            if row is not None and (status is None or row.status == status):
                row.error_message = message[:MAX_ERROR]


def close_runs(
    database: Database, run_ids: Sequence[int], reason: str, detail: str, now: datetime
) -> list[int]:
    """End every run of ``run_ids`` whose executions are all ``exited`` or ``failed`` (at least one
    exited) as ``closed``, with its realised P&L; returns the runs closed."""
    closed: list[int] = []
    with database.session() as session:
        for run_id in sorted(set(run_ids)):
            run = session.get(StrategyRun, run_id, with_for_update=True)
            if run is None or run.ended_at is not None or run.status == "entering":
                continue
            rows = session.scalars(select(StrategyExecution).where(StrategyExecution.run_id == run_id)).all()
            statuses = {r.status for r in rows}
            if not statuses <= {"exited", "failed"} or "exited" not in statuses:
                continue
            run.status = "closed"
            run.ended_at = now
            run.exit_reason = reason
            run.exit_reason_detail = detail[:MAX_ERROR]
            run.final_pnl = sum((r.realized_pnl or Decimal(0) for r in rows), Decimal(0))
            closed.append(run_id)
    return closed


__all__ = [
    "OPEN_STATUSES",
    "ExitResult",
    "ExitState",
    "attempt_prefix",
    "claim_exit",
    "close_runs",
    "exit_intents",
    "finish_attempt",
    "note",
    "read_state",
    "target_states",
]
