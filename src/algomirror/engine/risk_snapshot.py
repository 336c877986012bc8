"""The risk engine's live snapshot of one open run: what the risk monitor page
shows, published on ``run:{run_id}:risk`` as event ``snapshot``.

Pure over the engine's in-memory state and the mark book: no database read, no I/O. Money and prices are
Decimal rupees sent as strings (``None`` = unknown); times are ISO-8601 UTC. The run's P&L is the one the
rules see (usable marks only, PRODUCT §6.1); each execution also shows its latest mark, usable or not,
with its source and age, so the page can tell a stale price from a missing one.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from algomirror.domain.money import PAISA
from algomirror.domain.pnl import ExecutionFills, Fill, RunPnl, execution_pnl, run_pnl
from algomirror.engine.marks import Mark, MarkBook

if TYPE_CHECKING:
    from algomirror.engine.risk_state import ExecutionState, RunState

SNAPSHOT_EVENT = "snapshot"


def risk_topic(run_id: int) -> str:
    """The live-bus topic of a run's risk panel."""
    return f"run:{run_id}:risk"


def _money(value: Decimal | None) -> str | None:
    """Rupees at the paisa ("0.00", never "0")."""
    return None if value is None else str(value.quantize(PAISA, rounding=ROUND_HALF_UP))


def _price(value: Decimal | None) -> str | None:
    """A price as stored (up to 4 decimals)."""
    return None if value is None else str(value)


def fills_of(execution: ExecutionState, run_id: int, mark: Decimal | None) -> ExecutionFills | None:
    """The execution as P&L input at ``mark`` (a usable LTP or None); None when nothing is filled."""
    if execution.filled <= 0:
        return None
    exits = (
        (Fill(min(execution.exited, execution.filled), execution.exit_price),) if execution.exited > 0 else ()
    )
    return ExecutionFills(
        run_id=run_id,
        account_id=execution.account_id,
        leg_id=execution.leg_id,
        side=execution.side,
        entries=(Fill(execution.filled, execution.entry_price),),
        exits=exits,
        mark=mark,
    )


def run_pnl_at(run: RunState, marks: dict[int, Decimal | None]) -> RunPnl:
    """The run's P&L (₹) with ``marks`` (execution id → usable LTP or None); current run only."""
    fills = [f for e in run.executions.values() if (f := fills_of(e, run.id, marks.get(e.id))) is not None]
    return run_pnl(fills, run.id)


def unknown_reason(run: RunState, marks: dict[int, Decimal | None]) -> str | None:
    """Why the run's P&L is unknown (the legs without a usable price, or with a fill price pending)."""
    missing = sorted(
        {e.symbol for e in run.executions.values() if e.open_units > 0 and marks.get(e.id) is None}
    )
    pending = sorted(
        {
            e.symbol
            for e in run.executions.values()
            if e.filled > 0 and (e.entry_price is None or (e.exited > 0 and e.exit_price is None))
        }
    )
    parts = []
    if missing:
        parts.append("no usable price for " + ", ".join(missing))
    if pending:
        parts.append("fill price pending for " + ", ".join(pending))
    return "; ".join(parts) or None


def _execution(
    run: RunState, execution: ExecutionState, usable: Decimal | None, latest: Mark | None, now: datetime
) -> dict[str, Any]:
    fills = fills_of(execution, run.id, usable)
    pnl = execution_pnl(fills).total if fills is not None else None
    return {
        "id": execution.id,
        "account_id": execution.account_id,
        "leg_id": execution.leg_id,
        "symbol": execution.symbol,
        "exchange": execution.exchange,
        "side": execution.side,
        "open_qty": execution.open_units,
        "entry_price": _price(execution.entry_price),
        "ltp": _price(latest.ltp) if latest is not None else None,
        "source": latest.source if latest is not None else None,
        "mark_at": latest.at.isoformat() if latest is not None else None,
        # A tick stamped a little ahead of our clock is 0 ms old, not negative.
        "age_ms": max(0, int((now - latest.at).total_seconds() * 1000)) if latest is not None else None,
        "pnl": _money(pnl),
        "stop_loss": _price(execution.stop_loss),
        "target": _price(execution.target),
        "status": execution.status,
    }


def build_snapshot(run: RunState, book: MarkBook, now: datetime) -> dict[str, Any]:
    """The ``snapshot`` event's payload of ``run`` at ``now`` (aware UTC), from usable marks in ``book``."""
    executions = sorted(run.executions.values(), key=lambda e: e.id)
    usable: dict[int, Decimal | None] = {}
    latest: dict[int, Mark | None] = {}
    for e in executions:
        mark = book.usable(e.symbol, e.exchange, now)
        usable[e.id] = None if mark is None else mark.ltp
        latest[e.id] = book.get(e.symbol, e.exchange)
    pnl = run_pnl_at(run, usable)
    total = pnl.aggregate.total
    accounts = sorted({e.account_id for e in executions})
    trailing = run.trailing
    return {
        "run_id": run.id,
        "strategy_id": run.strategy_id,
        "at": now.isoformat(),
        "pnl": _money(total),
        "unknown_reason": unknown_reason(run, usable) if total is None else None,
        "peak": _money(trailing.peak) if trailing is not None else None,
        "trailing_stop": _money(trailing.level) if trailing is not None else None,
        "trailing_initial": _money(trailing.initial_stop) if trailing is not None else None,
        "trailing_armed": trailing is not None,
        "max_loss": _money(run.max_loss),
        "max_profit": _money(run.max_profit),
        "scope": "per_account" if run.scope == "per_account" else "aggregate",
        "accounts": [
            {
                "account_id": a,
                "pnl": _money(pnl.per_account[a].total) if a in pnl.per_account else "0.00",
            }
            for a in accounts
        ],
        "executions": [_execution(run, e, usable[e.id], latest[e.id], now) for e in executions],
    }


__all__ = ["SNAPSHOT_EVENT", "build_snapshot", "fills_of", "risk_topic", "run_pnl_at", "unknown_reason"]
