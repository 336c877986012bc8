"""The planning step of an Execute: one run, its planned executions and the command, in the caller's
transaction.

Resolution happens in the engine: the web (and the scheduler) queue an ``execute_strategy`` command,
and :class:`~algomirror.engine.resolution.StrategyResolver` resolves expiry, strike, symbol and
quantity per leg × account on the feed account, then calls :func:`plan_run` and
:func:`request_execute` (token ``run-of:{command_id}``) in ONE transaction, together with finishing its
own command: either the run, its ``pending`` executions and the ``execute_run`` command all exist, or
none does. The engine's :class:`~algomirror.engine.execution.EntryExecutor` then sends the orders.
Nothing here talks to a broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from algomirror.db.models import EngineCommand, StrategyExecution, StrategyRun

EXECUTE_RUN = "execute_run"


@dataclass(frozen=True, slots=True)
class PlannedExecution:
    """One leg on one account as resolved for this run: the OpenAlgo symbol, its exchange, the product
    and the quantity in units (lots × lot size). ``underlying`` names the contract's base (NIFTY)."""

    leg_id: int
    account_id: int
    symbol: str
    exchange: str
    product: str
    quantity: int
    underlying: str | None = None


def plan_run(
    session: Session,
    strategy_id: int,
    planned: Sequence[PlannedExecution],
    *,
    now: datetime,
    skipped: Sequence[tuple[int, str]] = (),
) -> StrategyRun:
    """Insert a new ``entering`` run of ``strategy_id`` and one ``pending`` execution per planned leg ×
    account (the caller commits). ``skipped`` lists (account id, reason) pairs the pre-checks left out;
    they go on the run's result, not into executions.

    Raises IntegrityError (at flush) when the strategy already has an open run, or when one leg ×
    account is planned twice: the schema refuses both.
    """
    if not planned:
        raise ValueError("a run needs at least one planned execution")
    for item in planned:
        if item.quantity <= 0:
            raise ValueError(f"planned quantity must be positive, got {item.quantity}")
    run = StrategyRun(
        strategy_id=strategy_id,
        status="entering",
        started_at=now,
        result={"skipped": [{"account_id": a, "reason": r} for a, r in skipped]} if skipped else None,
    )
    session.add(run)
    session.flush()
    for item in planned:
        session.add(
            StrategyExecution(
                strategy_id=strategy_id,
                account_id=item.account_id,
                leg_id=item.leg_id,
                run_id=run.id,
                symbol=item.symbol,
                exchange=item.exchange,
                product=item.product,
                underlying_symbol=item.underlying,
                planned_quantity=item.quantity,
                total_quantity=item.quantity,
                status="pending",
            )
        )
    session.flush()
    return run


def request_execute(session: Session, *, user_id: int, run_id: int, token: str) -> EngineCommand:
    """Queue the ``execute_run`` command for ``run_id`` (the caller commits). ``token`` is the page's
    idempotency token: the same token twice fails with IntegrityError, so a double submit is one
    command."""
    command = EngineCommand(user_id=user_id, kind=EXECUTE_RUN, payload={"run_id": run_id}, token=token)
    session.add(command)
    session.flush()
    return command


__all__ = ["EXECUTE_RUN", "PlannedExecution", "plan_run", "request_execute"]
