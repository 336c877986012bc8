"""An account's day P&L for the kill switch (PRODUCT §6.10): the realised P&L of its executions exited
on the IST trading day, read from ``strategy_executions`` (entry/exit averages and quantities, sign +1
BUY, −1 SELL), and the open part the risk engine values (``RiskEngine.account_open_pnl``). Unknown is never 0.

**Runs carried over** (started before today's IST day, e.g. NRML held overnight) count only today's
change: the run's P&L now − its *baseline*, the last ``run_pnl_samples`` row before today's session
start (09:15 IST). The sample is the run's P&L since entry (realised of legs exited so far + unrealised),
so the same rule covers every leg of such a run whatever day it exits:

- open (held by the risk engine): today = the account's open P&L of the run − baseline;
- ended, with an execution exited today: today = Σ realised of *all* its executions (any exit day) −
  baseline. A leg exited today thus counts only its move since the baseline, and one exited yesterday
  (already in the baseline) nets to 0 — nothing counted twice, nothing lost.

The sample is the run's total, not an account's share, so a carried-over run with filled executions on
more than one account makes each of those accounts' day P&L unknown (no per-account samples exist), as
does a carried-over run with no sample before today's session (no closing P&L from the previous session).
Runs started today count whole, as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models import RunPnlSample, StrategyExecution, StrategyLeg, StrategyRun
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


SESSION_OPEN = time(9, 15)  # IST: NSE/BSE F&O (calendar.default_weekday_sessions); the baseline's cut-off


@dataclass(frozen=True, slots=True)
class Baseline:
    """A carried-over run's P&L (₹) at the end of the previous session (``pnl`` None: no sample) and the
    accounts with filled executions in it (the sample is theirs only when there is one)."""

    run_id: int
    pnl: Decimal | None
    accounts: frozenset[int]

    def share(self, account_id: int) -> tuple[Decimal | None, str | None]:
        """``account_id``'s part of the baseline (₹), or None and why it cannot be known."""
        if self.pnl is None:
            return None, f"no closing P&L for run {self.run_id} from the previous session"
        if self.accounts != {account_id}:
            return None, (
                f"run {self.run_id} (carried over) spans several accounts: "
                "its previous-session P&L per account is not recorded"
            )
        return self.pnl, None


def session_start(now: datetime) -> datetime:
    """Today's (IST) session open, 09:15 IST, as an aware UTC datetime: the cut-off of the baselines."""
    return ist_combine(ist_today(now), SESSION_OPEN)


def carried_baselines(session: Session, run_ids: Iterable[int], now: datetime) -> dict[int, Baseline]:
    """Of ``run_ids``, those started before ``now``'s IST day, each with its :class:`Baseline`."""
    ids = list(run_ids)
    if not ids:
        return {}
    start, _ = day_bounds(now)
    carried = list(
        session.scalars(select(StrategyRun.id).where(StrategyRun.id.in_(ids), StrategyRun.started_at < start))
    )
    if not carried:
        return {}
    cut = session_start(now)
    pnl: dict[int, Decimal] = {}
    for run_id, value in session.execute(
        select(RunPnlSample.run_id, RunPnlSample.pnl)
        .where(RunPnlSample.run_id.in_(carried), RunPnlSample.at < cut)
        .order_by(RunPnlSample.run_id, RunPnlSample.at)
    ).all():
        pnl[run_id] = value  # ordered by time: the last one before the cut-off stays
    accounts: dict[int, set[int]] = {r: set() for r in carried}
    for run_id, account_id in session.execute(
        select(StrategyExecution.run_id, StrategyExecution.account_id)
        .where(
            StrategyExecution.run_id.in_(carried),
            StrategyExecution.filled_quantity > 0,
            StrategyExecution.status != "failed",
        )
        .distinct()
    ).all():
        accounts[run_id].add(account_id)
    return {r: Baseline(r, pnl.get(r), frozenset(accounts[r])) for r in carried}


def open_today(
    account_id: int, open_pnl: Decimal | None, baselines: Iterable[Baseline]
) -> tuple[Decimal | None, str | None]:
    """Today's part (₹) of ``account_id``'s open P&L ``open_pnl`` (its total over the held open runs):
    minus the baseline of every carried-over held run it has filled executions in; None and why when
    ``open_pnl`` or such a baseline is unknown (``open_pnl`` None gives no reason: the caller's)."""
    total = open_pnl
    for baseline in baselines:
        if account_id not in baseline.accounts:
            continue
        share, why = baseline.share(account_id)
        if share is None:
            return None, why
        if total is not None:
            total -= share
    return (None if total is None else total.quantize(PAISA)), None


def realised_today(
    session: Session, account_ids: Iterable[int], now: datetime, held_runs: set[int] | None
) -> dict[int, tuple[Decimal | None, str | None]]:
    """Per account: the realised P&L (₹, paisa) of its executions exited on ``now``'s IST day in runs
    not in ``held_runs`` (those the risk engine values), with None and a reason when it cannot be known:
    an exit price pending, or an open run on the account that ``held_runs`` lacks (not loaded yet; with
    ``held_runs`` None every open run counts as not held). Sign +1 BUY, −1 SELL. An ended run started
    before today counts Σ realised of all its executions − its baseline (module docstring), unknown
    without one."""
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
    ended_today = {e.run_id for e, _, ended_at in rows if ended_at is not None and e.run_id not in held}
    baselines = carried_baselines(session, ended_today, now)
    if baselines:
        # A carried-over ended run counts as a whole: every one of its executions, whatever day it exited.
        rows = [r for r in rows if r[0].run_id not in baselines]
        rows += session.execute(
            select(StrategyExecution, StrategyLeg.action, StrategyRun.ended_at)
            .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
            .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
            .where(StrategyExecution.account_id.in_(ids), StrategyExecution.run_id.in_(list(baselines)))
        ).all()
        for baseline in baselines.values():
            for account in ids:
                if account not in baseline.accounts:
                    continue
                share, why = baseline.share(account)
                value, reason = result[account]
                if value is None:
                    continue
                result[account] = (None, why) if share is None else (value - share, reason)
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


__all__ = [
    "SESSION_OPEN",
    "Baseline",
    "DayPnl",
    "carried_baselines",
    "day_bounds",
    "open_today",
    "realised_today",
    "session_start",
]
