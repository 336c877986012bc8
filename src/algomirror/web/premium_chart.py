"""The premium/Supertrend chart's data: ``GET /risk/runs/<run_id>/premium.json``.

The series is the engine's (:class:`~algomirror.engine.premium_series.PremiumSeriesBuilder`, PRODUCT §6.5:
the same legs, weights, gap rule, closed candles only), computed here in the web process from the
gateway's history on the user's primary account (else the first active account with a key), through the
process-wide background broker loop (:func:`~algomirror.broker.sync_facade.background`). Tick candles
live in the engine only: the page appends them from the live ``supertrend`` events.

Query: ``timeframe`` (3m/5m/10m/15m, default the strategy's), ``days`` (1–5 trading sessions shown,
default 1; the warm-up before them is loaded but not shown), ``period`` and ``multiplier`` (default the
strategy's). Another user's run, or a missing one, is a 404; a bad parameter a 400.

Answer: ``{"timeframe", "candles": [{"time", "open", "high", "low", "close"}], "supertrend": [{"time",
"value", "direction"}], "state", "message", "period", "multiplier", "exit_type"}`` — ``time`` epoch
seconds (UTC) of the candle's start; ``state`` ``ok`` / ``warming`` / ``unknown`` / ``off`` (the
strategy's exit is off: the chart is still drawn).
"""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.errors import BrokerError
from algomirror.broker.sync_facade import background
from algomirror.db.models import Strategy, StrategyExecution, StrategyLeg, StrategyRun, TradingAccount
from algomirror.db.models.enums import SUPERTREND_TIMEFRAMES
from algomirror.domain.supertrend import supertrend
from algomirror.domain.timeutil import to_ist
from algomirror.engine.premium_series import PremiumSeries, PremiumSeriesBuilder, first_day, legs_of
from algomirror.host_settings import load_host_policy
from algomirror.web.account_access import AccessRefused, broker_access
from algomirror.web.calendar_cache import web_calendar
from algomirror.web.context import db, market_now, me, release_db

bp = Blueprint("premium_chart", __name__, url_prefix="/risk/runs")

MAX_DAYS = 5
# Seconds for the whole build (a few history reads per leg, spaced by the gateway's 350 ms rule).
BUILD_TIMEOUT = 40.0
TIMEOUTS = Timeouts(connect=4.0, read=10.0, order=10.0)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, description=f"{name} must be a whole number")
    if not low <= value <= high:
        abort(400, description=f"{name} must be between {low} and {high}")
    return value


def _multiplier_arg(default: Decimal) -> float:
    raw = request.args.get("multiplier")
    if raw is None or raw == "":
        return float(default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        abort(400, description="multiplier must be a number")
    if not value.is_finite() or not Decimal(0) < value <= Decimal(20):
        abort(400, description="multiplier must be above 0 and at most 20")
    return float(value)


@bp.get("/<id:run_id>/premium.json")
@login_required
def premium_json(run_id: int) -> ResponseReturnValue:
    """The run's combined-premium candles and Supertrend line (module docstring); 404 unless it is the
    signed-in user's run, 400 for a bad parameter. A broker failure is ``state: unknown``, never a 5xx."""
    session = db()
    row = session.execute(
        select(StrategyRun, Strategy)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(StrategyRun.id == run_id, Strategy.user_id == me().id)
    ).first()
    if row is None:
        abort(404)
    run, strategy = row
    timeframe = request.args.get("timeframe") or strategy.supertrend_timeframe
    if timeframe not in SUPERTREND_TIMEFRAMES:
        abort(400, description=f"timeframe must be one of {', '.join(SUPERTREND_TIMEFRAMES)}")
    days = _int_arg("days", 1, 1, MAX_DAYS)
    period = _int_arg("period", strategy.supertrend_period, 1, 100)
    multiplier = _multiplier_arg(strategy.supertrend_multiplier)
    answer: dict[str, Any] = {
        "timeframe": timeframe,
        "candles": [],
        "supertrend": [],
        "state": "unknown",
        "message": None,
        "period": period,
        "multiplier": multiplier,
        "exit_type": strategy.supertrend_exit_type,
    }
    executions = session.execute(
        select(
            StrategyExecution.symbol,
            StrategyExecution.exchange,
            StrategyLeg.action,
            StrategyExecution.filled_quantity,
            StrategyExecution.exited_quantity,
        )
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .where(StrategyExecution.run_id == run.id)
        .order_by(StrategyExecution.leg_id, StrategyExecution.account_id)
    ).all()
    rows = [(s, e, (a or "").upper(), int(f), int(x)) for s, e, a, f, x in executions]
    legs = legs_of(rows)
    if not legs and run.ended_at is not None:
        # A closed run: chart the legs it held (nothing is open any more).
        legs = legs_of([(s, e, a, f, 0) for s, e, a, f, _ in rows])
    if not legs:
        answer["message"] = "no legs with executed quantity"
        return jsonify(answer)
    account = session.scalars(
        select(TradingAccount)
        .where(
            TradingAccount.user_id == me().id,
            TradingAccount.is_active.is_(True),
            TradingAccount.api_key_encrypted.is_not(None),
        )
        .order_by(TradingAccount.is_primary.desc(), TradingAccount.created_at, TradingAccount.id)
    ).first()
    if account is None or not account.api_key_encrypted:
        answer["message"] = "no active account with an API key to read history from"
        return jsonify(answer)
    policy = load_host_policy(session)
    try:
        access = broker_access(account, policy)
    except AccessRefused as exc:
        answer["message"] = str(exc)
        return jsonify(answer)
    host_url, name, api_key = access.host_url, access.name, access.api_key
    now = market_now()
    calendar = web_calendar()
    release_db()  # no transaction is held across the broker calls

    async def build(pool: HostPool) -> PremiumSeries:
        client = OpenAlgoClient(
            host_url,
            api_key,
            pool=pool,
            timeouts=TIMEOUTS,
            retry=RetryPolicy(attempts=2),
            name=name,
            host_policy=lambda: policy,
        )
        return await PremiumSeriesBuilder(calendar=calendar).build(
            legs, timeframe, now, client, period=period, days=days
        )

    try:
        series = background().run_with_pool(build, timeout=BUILD_TIMEOUT)
    except (BrokerError, ValueError) as exc:
        answer["message"] = f"history unavailable: {exc}"
        return jsonify(answer)
    # The sessions shown end with the newest candle's (before today's open: the last session).
    last_day = to_ist(series.candles[-1].start).date() if series.candles else to_ist(now).date()
    shown_from = first_day(last_day, days, calendar)
    answer.update(_points(series, period, multiplier, shown_from))
    answer["state"] = series.state if strategy.supertrend_exit_enabled or series.state == "unknown" else "off"
    answer["message"] = series.message
    return jsonify(answer)


def _points(series: PremiumSeries, period: int, multiplier: float, shown_from: date) -> dict[str, Any]:
    """Chart points of the candles from ``shown_from`` (IST date) on; the line over every candle loaded
    (its warm-up included) and shown only once the warm-up is complete."""
    candles: list[dict[str, Any]] = []
    line: list[dict[str, Any]] = []
    points = supertrend(series.candles, period, multiplier) if series.candles else []
    for index, (candle, point) in enumerate(zip(series.candles, points, strict=True)):
        if to_ist(candle.start).date() < shown_from:
            continue
        stamp = int(candle.start.timestamp())
        candles.append(
            {
                "time": stamp,
                "open": float(candle.open),
                "high": float(candle.high),
                "low": float(candle.low),
                "close": float(candle.close),
            }
        )
        if point is not None and index + 1 >= series.needed and math.isfinite(point.line):
            line.append({"time": stamp, "value": point.line, "direction": point.direction})
    return {"candles": candles, "supertrend": line}
