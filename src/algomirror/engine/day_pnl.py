"""An account's day P&L for the kill switch (PRODUCT §6.10): the realised P&L of its executions exited
on the IST trading day, read from ``strategy_executions`` (entry/exit averages and quantities, sign +1
BUY, −1 SELL), and the open part the risk engine values (``RiskEngine.account_open_pnl``). Unknown is never 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models import StrategyExecution, StrategyLeg, StrategyRun
from algomirror.domain.errors import InvalidFill
from algomirror.domain.money import PAISA
from algomirror.domain.pnl import ExecutionFills, Fill, execution_pnl
from algomirror.domain.timeutil import ist_combine, ist_today


@dataclass(frozen=True, slots=True)
class DayPnl:
    """One account's day P&L (₹, paisa): ``total`` None = unknown (``unknown_reason`` says why)."""

    account_id: int
    realised: Decimal | None
    open: Decimal | None
    unknown_reason: str | None = None

    @property
    def total(self) -> Decimal | None:
        if self.realised is None or self.open is None:
            return None
        return (self.realised + self.open).quantize(PAISA)


def day_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The IST calendar day of ``now`` as aware [start, end) datetimes (the trading day's P&L window)."""
    day = ist_today(now)
    start = ist_combine(day, datetime.min.time())
    return start, start + timedelta(days=1)


def realised_today(
    session: Session, account_ids: Iterable[int], now: datetime, held_runs: set[int] | None
) -> dict[int, tuple[Decimal | None, str | None]]:
    """Per account: the realised P&L (₹, paisa) of its executions exited on ``now``'s IST day in runs
    not in ``held_runs`` (those the risk engine values), with None and a reason when it cannot be known:
    an exit price pending, or an open run on the account that ``held_runs`` lacks (not loaded yet; with
    ``held_runs`` None every open run counts as not held). Sign +1 BUY, −1 SELL."""
    ids = list(account_ids)
    if not ids:
        return {}
    held = held_runs or set()
    start, end = day_bounds(now)
    result: dict[int, tuple[Decimal | None, str | None]] = {a: (Decimal(0), None) for a in ids}
    rows = session.execute(
        select(StrategyExecution, StrategyLeg.action, StrategyRun.ended_at)
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
        .where(
            StrategyExecution.account_id.in_(ids),
            (StrategyRun.ended_at.is_(None))
            | ((StrategyExecution.exit_time >= start) & (StrategyExecution.exit_time < end)),
        )
    ).all()
    for execution, action, ended_at in rows:
        account = execution.account_id
        value, reason = result[account]
        if value is None or execution.run_id in held:
            continue
        if ended_at is None:
            if execution.status != "failed":
                why = (
                    f"run {execution.run_id} is not valued yet (the risk engine has not loaded it)"
                    if held_runs is not None
                    else "open positions cannot be valued (no risk engine)"
                )
                result[account] = (None, why)
            continue
        part = _realised(execution, "SELL" if (action or "").upper() == "SELL" else "BUY")
        if part is None:
            result[account] = (None, f"execution {execution.id}: exit price pending")
        else:
            result[account] = (value + part, reason)
    return {a: (None if v is None else v.quantize(PAISA), r) for a, (v, r) in result.items()}


def _realised(execution: StrategyExecution, side: Literal["BUY", "SELL"]) -> Decimal | None:
    filled = execution.filled_quantity
    exited = min(execution.exited_quantity, filled)
    if filled <= 0 or exited <= 0:
        return Decimal(0)
    try:
        pnl = execution_pnl(
            ExecutionFills(
                run_id=execution.run_id,
                account_id=execution.account_id,
                leg_id=execution.leg_id,
                side=side,
                entries=(Fill(filled, execution.entry_price),),
                exits=(Fill(exited, execution.exit_price),),
            )
        )
    except InvalidFill:
        return None
    return pnl.exact_realised


__all__ = ["DayPnl", "day_bounds", "realised_today"]
