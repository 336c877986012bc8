"""Realised P&L confirmed from the broker's own fills (PRODUCT §5: "realised P&L from fills").

When an exit finishes, its realised P&L is written at once from the orders' average prices as the
orderbook reports them. A broker rounds an order's average to the paisa (or to a few decimals), so an
order filled at two prices gives an average whose product with the quantity is off by paise. The
tradebook lists each fill at its own price: once the account's sync has stored the trades of every
entry and exit order of an execution, and their quantities add up to what the execution says was
filled and exited, :func:`true_up_pnl` rewrites the execution's realised P&L from those fills —
Σ sell value − Σ buy value, exact — and the run's final P&L with it.

Idempotent and safe to run after every tradebook sync: an execution whose fills are not all in the
tradebook yet (or never will be, e.g. a tradebook of one row per order) keeps the P&L it has.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models import StrategyExecution, StrategyRun, Trade

_PAISA = Decimal("0.01")
Fills = dict[str, list[tuple[str, int, Decimal]]]  # order id -> (action, quantity, price) of each fill
# Exits older than this are left as they are (the tradebook holds today's fills only).
_LOOKBACK = timedelta(days=1)


def true_up_pnl(session: Session, account_id: int, now: datetime) -> int:
    """Rewrite from the stored trades the realised P&L (₹, to the paisa) of ``account_id``'s executions
    exited within a day of ``now`` whose every fill is in the tradebook; returns how many changed. The
    caller commits (it runs in the sync's transaction that stored the trades)."""
    executions = list(
        session.scalars(
            select(StrategyExecution).where(
                StrategyExecution.account_id == account_id,
                StrategyExecution.status == "exited",
                StrategyExecution.exit_order_ids.is_not(None),
                StrategyExecution.entry_order_ids.is_not(None),
                StrategyExecution.exit_time >= now - _LOOKBACK,
            )
        )
    )
    if not executions:
        return 0
    wanted = {
        order_id for e in executions for order_id in (*(e.entry_order_ids or []), *(e.exit_order_ids or []))
    }
    fills: Fills = defaultdict(list)
    for trade in session.execute(
        select(Trade.order_id, Trade.action, Trade.quantity, Trade.average_price).where(
            Trade.account_id == account_id, Trade.order_id.in_(sorted(wanted))
        )
    ):
        if trade.average_price is not None:
            fills[trade.order_id].append((trade.action, trade.quantity, trade.average_price))
    count = 0
    for execution in executions:
        exact = _from_fills(execution, fills)
        if exact is not None and exact != execution.realized_pnl:
            execution.realized_pnl = exact
            count += 1
    # Every closed run looked at, not only those changed now: a run closed (summing the old figures)
    # while an earlier true-up's transaction was still open would otherwise keep a stale total.
    for run_id in sorted({e.run_id for e in executions}):
        _retotal(session, run_id)
    return count


def _from_fills(execution: StrategyExecution, fills: Fills) -> Decimal | None:
    """Σ sell value − Σ buy value of the execution's fills, or None unless the tradebook accounts for
    exactly the quantities the execution records (every fill of ours, nothing missing)."""
    entry_ids = execution.entry_order_ids or []
    exit_ids = execution.exit_order_ids or []
    entered = sum(q for oid in entry_ids for _, q, _ in fills.get(oid, []))
    exited = sum(q for oid in exit_ids for _, q, _ in fills.get(oid, []))
    if entered != execution.filled_quantity or exited != execution.exited_quantity or not exited:
        return None
    value = Decimal(0)
    for oid in (*entry_ids, *exit_ids):
        for action, quantity, price in fills.get(oid, []):
            value += price * quantity if action == "SELL" else -price * quantity
    return value.quantize(_PAISA, rounding=ROUND_HALF_UP)


def _retotal(session: Session, run_id: int) -> None:
    """A closed run's final P&L again as the sum of its executions' realised P&L."""
    run = session.get(StrategyRun, run_id)
    if run is None or run.final_pnl is None:
        return
    session.flush()
    values = session.scalars(select(StrategyExecution.realized_pnl).where(StrategyExecution.run_id == run_id))
    total = sum((v for v in values if v is not None), Decimal(0))
    if run.final_pnl != total:
        run.final_pnl = total


__all__ = ["true_up_pnl"]
