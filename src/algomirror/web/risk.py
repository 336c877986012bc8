"""The Risk area (PRODUCT §5.12 risk panel, §6.9): the open runs with their limits and the latest risk
events, and one run's live risk monitor.

Routes (blueprint ``risk``, login required):

* ``risk.index`` — GET ``/risk/``: the user's open runs (strategy, status, P&L, max loss / max profit,
  trailing stop, data age) and the user's last :data:`EVENTS_SHOWN` risk events; links to each run's
  monitor, the kill switch (``/risk/kill``) and the market pages (``/market/…``).
* ``risk.monitor`` — GET ``/risk/runs/<run_id>``: one run rendered from the database (executions legs ×
  accounts with their levels, per-account and run P&L, the run's latches, its last risk events), then
  kept live in the browser by ``static/js/risk_monitor.js`` from the risk engine's ``run:{id}:risk``
  events (``snapshot``, breach events named by rule code, ``supertrend``).
* ``risk.mtm`` — GET ``/risk/runs/<run_id>/mtm.json``: the run's intraday MTM curve from
  ``run_pnl_samples`` (written by the risk engine) for the chart.

Pages only read: the engine does all protection (PRODUCT §6). Another user's run is a 404, like a run
that does not exist. Every query is bounded by the signed-in user's id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, jsonify, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models import (
    RiskEvent,
    RunPnlSample,
    Strategy,
    StrategyExecution,
    StrategyRun,
    TradingAccount,
)
from algomirror.db.models.enums import RISK_EVENT_TYPES
from algomirror.domain.timeutil import clock_speed, to_ist
from algomirror.web.context import db, market_now, me, state
from algomirror.web.dashboard import stale_after
from algomirror.web.strategies import run_data

bp = Blueprint("risk", __name__, url_prefix="/risk")

# PRODUCT §6.9: the monitor shows the last 20 events; the index the user's latest as many.
EVENTS_SHOWN = 20
# A page never lists more open runs than this (each is valued from its executions).
OPEN_RUNS_SHOWN = 50
# Live updates for at most this many runs on the index (web/live.py allows 16 topics per stream).
LIVE_RUNS = 15
# A mark older than this (wall-clock seconds) is shown stale (PRODUCT §6.1: a REST quote < 5 s is usable).
STALE_SECONDS = 5
# The MTM chart's history is bounded: a whole session at the default 10 s sampling is ~2,300 points.
MTM_POINTS_MAX = 5000
# Run latches (PRODUCT §6.3–6.5): (rule code, label, triggered-at attribute, value attribute).
LATCHES: tuple[tuple[str, str, str, str], ...] = (
    ("max_loss", "Max loss", "max_loss_triggered_at", "max_loss_value"),
    ("max_profit", "Max profit", "max_profit_triggered_at", "max_profit_value"),
    ("trailing_stop", "Trailing stop", "trailing_triggered_at", "trailing_value"),
    ("supertrend_exit", "Supertrend", "supertrend_triggered_at", "supertrend_value"),
)
# The breach events the monitor listens for (RISK_EVENT_TYPES, the event name on ``run:{id}:risk``).
RULE_CODES = RISK_EVENT_TYPES


@dataclass(frozen=True)
class EventRow:
    """One risk event as the pages list it."""

    id: int
    at: datetime
    run_id: int | None
    strategy_id: int
    strategy_name: str
    account_name: str
    event_type: str
    action: str | None
    trigger_value: Decimal | None
    threshold_value: Decimal | None
    text: str


@dataclass(frozen=True)
class Latch:
    """A run latch: the rule, when it first fired in the run (None = not fired) and the P&L then."""

    code: str
    label: str
    at: datetime | None
    value: Decimal | None


@dataclass(frozen=True)
class OpenRun:
    """One open run on the index: its strategy, the valued run and the age of its oldest open mark."""

    strategy: Strategy
    view: run_data.RunView
    oldest_mark_seconds: int | None
    unknown: bool


# ---------------------------------------------------------------------------------------- queries


def owned_run(session: Session, user_id: int, run_id: int) -> tuple[StrategyRun, Strategy] | None:
    """Run ``run_id`` with its strategy when the strategy is the user's, else None."""
    found = session.execute(
        select(StrategyRun, Strategy)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(StrategyRun.id == run_id, Strategy.user_id == user_id)
    ).first()
    return None if found is None else (found[0], found[1])


def _event_text(details: str | None) -> str:
    """The readable part of a risk event's ``details`` (a JSON text from the risk engine with a
    ``detail`` or ``message``, or plain text from older writers)."""
    if not details:
        return ""
    try:
        parsed = json.loads(details)
    except ValueError:
        return details
    if isinstance(parsed, dict):
        for key in ("message", "detail", "broker_message", "reason"):
            value = parsed.get(key)
            if isinstance(value, str) and value:
                return value
        return ""
    return details


def risk_events(session: Session, user_id: int, *, run_id: int | None = None) -> list[EventRow]:
    """The user's latest :data:`EVENTS_SHOWN` risk events (of ``run_id`` only, when given), newest first."""
    query = (
        select(RiskEvent, StrategyExecution.run_id, Strategy.id, Strategy.name, TradingAccount.account_name)
        .join(StrategyExecution, StrategyExecution.id == RiskEvent.strategy_execution_id)
        .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
        .join(TradingAccount, TradingAccount.id == StrategyExecution.account_id)
        .where(Strategy.user_id == user_id)
    )
    if run_id is not None:
        query = query.where(StrategyExecution.run_id == run_id)
    rows = session.execute(query.order_by(RiskEvent.id.desc()).limit(EVENTS_SHOWN)).tuples()
    return [
        EventRow(
            id=event.id,
            at=event.created_at,
            run_id=event.run_id if event.run_id is not None else execution_run,
            strategy_id=strategy_id,
            strategy_name=strategy_name,
            account_name=account_name,
            event_type=event.event_type,
            action=event.action_taken,
            trigger_value=event.trigger_value,
            threshold_value=event.threshold_value,
            text=_event_text(event.details),
        )
        for event, execution_run, strategy_id, strategy_name, account_name in rows
    ]


def oldest_mark_seconds(view: run_data.RunView, at: datetime) -> int | None:
    """Seconds since the oldest mark among the run's open executions (None when none has one)."""
    ages = [
        age
        for row in view.rows
        if row.open_quantity
        for age in (row.mark.age_seconds(at),)
        if age is not None
    ]
    return max(ages) if ages else None


def open_runs(session: Session, user_id: int, at: datetime, stale: timedelta) -> list[OpenRun]:
    """The user's open runs (newest first, at most :data:`OPEN_RUNS_SHOWN`), valued at ``at``."""
    found = session.execute(
        select(StrategyRun, Strategy)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(Strategy.user_id == user_id, StrategyRun.ended_at.is_(None))
        .order_by(StrategyRun.started_at.desc(), StrategyRun.id.desc())
        .limit(OPEN_RUNS_SHOWN)
    ).tuples()
    runs = []
    for run, strategy in found:
        view = run_data.run_view(session, user_id, run, at, stale)
        runs.append(
            OpenRun(
                strategy=strategy,
                view=view,
                oldest_mark_seconds=oldest_mark_seconds(view, at),
                unknown=view.unknown_marks > 0,
            )
        )
    return runs


def leg_levels(session: Session, run_id: int) -> dict[int, tuple[Decimal | None, Decimal | None]]:
    """Per execution of the run: its leg stop-loss and target prices (PRODUCT §6.6; None = none)."""
    rows = session.execute(
        select(
            StrategyExecution.id, StrategyExecution.stop_loss_price, StrategyExecution.take_profit_price
        ).where(StrategyExecution.run_id == run_id)
    ).tuples()
    return {execution_id: (stop, target) for execution_id, stop, target in rows}


def latches(run: StrategyRun) -> list[Latch]:
    """The run's four latches (PRODUCT §6.3–6.5), fired or not."""
    return [
        Latch(code, label, getattr(run, at_name), getattr(run, value_name))
        for code, label, at_name, value_name in LATCHES
    ]


def mtm_points(session: Session, run_id: int) -> list[dict[str, Any]]:
    """The run's MTM samples, oldest first, as chart points ``{"time": epoch seconds UTC, "value": ₹}``
    (float: a chart coordinate, not money to compute with). Samples in the same second collapse to the
    last one (the chart needs strictly increasing times); at most the latest :data:`MTM_POINTS_MAX`."""
    rows = session.execute(
        select(RunPnlSample.at, RunPnlSample.pnl)
        .where(RunPnlSample.run_id == run_id)
        .order_by(RunPnlSample.at.desc())
        .limit(MTM_POINTS_MAX)
    ).tuples()
    points: dict[int, float] = {}
    for at, pnl in reversed(list(rows)):
        points[int(at.timestamp())] = float(pnl)
    return [{"time": t, "value": v} for t, v in points.items()]


# ------------------------------------------------------------------------------------------ views


def _live_clock() -> dict[str, Any]:
    """What the page's script needs to age marks between snapshots: the market clock now and its speed
    (the demo's clock can run faster than the wall clock; ages are judged in wall-clock seconds)."""
    at = market_now()
    return {
        "generated_at": at,
        "clock_speed": clock_speed(state().market_clock),
        "stale_seconds": STALE_SECONDS,
        "today": to_ist(at).date(),
    }


@bp.route("/")
@login_required
def index() -> ResponseReturnValue:
    """The Risk page: open runs with their limits and live P&L, and the latest risk events."""
    clock = _live_clock()
    at = clock["generated_at"]
    runs = open_runs(db(), me().id, at, stale_after(at))
    return render_template(
        "risk/index.html",
        runs=runs,
        live_runs=[r.view.run.id for r in runs[:LIVE_RUNS]],
        events=risk_events(db(), me().id),
        rule_codes=RULE_CODES,
        **clock,
    )


@bp.route("/runs/<id:run_id>")
@login_required
def monitor(run_id: int) -> ResponseReturnValue:
    """One run's risk monitor (404 when the run is not the user's)."""
    found = owned_run(db(), me().id, run_id)
    if found is None:
        abort(404)
    run, strategy = found
    clock = _live_clock()
    at = clock["generated_at"]
    view = run_data.run_view(db(), me().id, run, at, stale_after(at))
    return render_template(
        "risk/monitor.html",
        run=run,
        strategy=strategy,
        view=view,
        latches=latches(run),
        levels=leg_levels(db(), run.id),
        events=risk_events(db(), me().id, run_id=run.id),
        oldest_mark=oldest_mark_seconds(view, at),
        rule_codes=RULE_CODES,
        **clock,
    )


@bp.route("/runs/<id:run_id>/mtm.json")
@login_required
def mtm(run_id: int) -> ResponseReturnValue:
    """The run's MTM history: ``{"run_id", "points": [{"time", "value"}], "max_loss", "max_profit"}``
    (limits as positive ₹ strings or null). 404 when the run is not the user's."""
    found = owned_run(db(), me().id, run_id)
    if found is None:
        abort(404)
    run, strategy = found
    return jsonify(
        {
            "run_id": run.id,
            "points": mtm_points(db(), run.id),
            "max_loss": None if strategy.max_loss is None else str(strategy.max_loss),
            "max_profit": None if strategy.max_profit is None else str(strategy.max_profit),
        }
    )
