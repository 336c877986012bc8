"""Mirror order and mirror check pages (blueprint ``mirror``; issue 11 items 10 and 12).

* ``/mirror``: one order (symbol with exchange, side, lots, type and prices, product) to chosen
  accounts with a lot multiplier each (default: the account's allocation multiplier). Review shows each
  account's lots and quantity; Send queues one ``mirror_order`` engine command under the review page's
  token (a double submit is one command) and opens its result page, whose live region shows each
  account's orders, fills, average and status until the command ends. No view talks to a broker.
* ``/mirror/check``: per open run, each account's intended legs against its synced positions
  (:mod:`algomirror.web.mirror_check`), drifts highlighted; per drift "Bring in line" (confirm the exact
  order, then a ``mirror_order`` for that account carrying ``run_id`` and ``reason``) or "Accept" (a
  ``mirror_acceptances`` row for exactly those quantities).

Every route is behind sign-in; another user's run, account or command is a 404; every POST is CSRF
checked (Flask-WTF's CSRFProtect).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from algomirror.db.models import EngineCommand, MirrorAcceptance, StrategyRun, TradingAccount
from algomirror.domain.errors import UnknownUnderlying
from algomirror.domain.instruments import TICK_SIZE, parse_symbol, underlying_spec
from algomirror.domain.mirror import (
    ORDER_TYPES,
    SIDES,
    MirrorRow,
    account_lots,
    parse_multiplier,
    symbol_lot_size,
)
from algomirror.domain.timeutil import clock_speed
from algomirror.engine.execution import ExecutionError
from algomirror.engine.mirror import MIRROR_ORDER, PRODUCTS, command_of, request_mirror
from algomirror.web import mirror_check
from algomirror.web.context import db, log_activity, market_now, me, now, state
from algomirror.web.dashboard import POLL_SECONDS, require_sign_in, stale_after
from algomirror.web.ids import parse_id

bp = Blueprint("mirror", __name__, url_prefix="/mirror")

COMMAND_TOKEN_MAX = 100  # engine_commands.token is VARCHAR(100)
MAX_LOTS = 10_000
ACTIVE = ("pending", "running")


require_sign_in(bp)


# ------------------------------------------------------------------------------------------- form


@dataclass
class AccountChoice:
    """One of the user's live accounts on the form: chosen or not, its multiplier text."""

    id: int
    name: str
    default_multiplier: str
    max_lots: int
    # Why the engine will not send to this account (inactive, entries halted); None: it will.
    blocked: str | None = None
    chosen: bool = False
    multiplier: str = ""
    error: str | None = None


@dataclass
class OrderForm:
    """The mirror order form as typed, its inline errors per field, and the parsed order."""

    values: dict[str, str]
    accounts: list[AccountChoice]
    errors: dict[str, str] = field(default_factory=dict)
    lot_size: int = 0

    @property
    def valid(self) -> bool:
        return not self.errors and not any(a.error for a in self.accounts)


def _accounts() -> list[AccountChoice]:
    rows = db().scalars(
        select(TradingAccount)
        .where(TradingAccount.user_id == me().id, TradingAccount.archived_at.is_(None))
        .order_by(TradingAccount.account_name, TradingAccount.id)
    )
    return [
        AccountChoice(
            a.id, a.account_name, _plain(a.allocation_multiplier), a.max_lots_per_leg, _account_block(a)
        )
        for a in rows
    ]


def _account_block(account: TradingAccount) -> str | None:
    """The engine's own pre-checks that skip an account (shown on the review, never "sending")."""
    if not account.is_active:
        return "the account is inactive"
    if account.entries_halted_reason:
        return f"entries halted: {account.entries_halted_reason}"
    return None


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _price(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def read_form(data: Any) -> OrderForm:
    """Parse the posted form; every invalid field gets its inline error in the same reply."""
    names = ("symbol", "exchange", "side", "lots", "order_type", "price", "trigger_price", "product")
    values = {n: (data.get(n) or "").strip() for n in names}
    values["symbol"] = values["symbol"].upper()
    form = OrderForm(values, _accounts())
    errors = form.errors
    symbol = values["symbol"]
    if not symbol:
        errors["symbol"] = "Enter the symbol, e.g. NIFTY01DEC2626000CE."
    else:
        try:
            form.lot_size = symbol_lot_size(symbol)
        except ValueError as exc:
            errors["symbol"] = f"{exc}."
        else:
            parsed = parse_symbol(symbol)
            try:
                expected = underlying_spec(parsed.base).fo_exchange if parsed else None
            except UnknownUnderlying:
                expected = None
            if expected is not None and values["exchange"] != expected:
                errors["exchange"] = f"{parsed.base if parsed else symbol} trades on {expected}."
    if values["exchange"] not in ("NFO", "BFO"):
        errors["exchange"] = "Choose NFO or BFO."
    if values["side"] not in SIDES:
        errors["side"] = "Choose BUY or SELL."
    if values["product"] not in PRODUCTS:
        errors["product"] = "Choose MIS or NRML."
    if not values["lots"].isdigit() or not 1 <= int(values["lots"]) <= MAX_LOTS:
        errors["lots"] = f"Lots must be a whole number from 1 to {MAX_LOTS:,}."
    order_type = values["order_type"]
    if order_type not in ORDER_TYPES:
        errors["order_type"] = "Choose MARKET, LIMIT, SL or SL-M."
    for name, label, needed in (
        ("price", "A limit or stop-loss limit order needs a limit price.", order_type in ("LIMIT", "SL")),
        ("trigger_price", "A stop-loss order needs a trigger price.", order_type in ("SL", "SL-M")),
    ):
        if not needed:
            values[name] = ""
            continue
        price = _price(values[name]) if values[name] else None
        if not values[name]:
            errors[name] = label
        elif price is None or price <= 0:
            errors[name] = "Enter a price above 0 in rupees, e.g. 120.50."
        elif price % TICK_SIZE:
            errors[name] = f"Prices must be on the {TICK_SIZE} tick."
    price, trigger = _price(values["price"] or "x"), _price(values["trigger_price"] or "x")
    if order_type == "SL" and price is not None and trigger is not None and "price" not in errors:
        if values["side"] == "BUY" and trigger > price:
            errors["trigger_price"] = "A BUY stop-loss triggers at or below its limit price."
        if values["side"] == "SELL" and trigger < price:
            errors["trigger_price"] = "A SELL stop-loss triggers at or above its limit price."
    for account in form.accounts:
        account.chosen = data.get(f"acct-{account.id}") == "on"
        account.multiplier = (data.get(f"mult-{account.id}") or account.default_multiplier).strip()
        if account.chosen:
            try:
                parse_multiplier(account.multiplier)
            except ValueError:
                account.error = "Multiplier: a number from 0 to 100, at most four decimals (e.g. 0.5)."
    if not any(a.chosen for a in form.accounts):
        errors["accounts"] = "Choose at least one account."
    return form


def _payload(form: OrderForm) -> dict[str, Any]:
    v = form.values
    return {
        "symbol": v["symbol"],
        "exchange": v["exchange"],
        "product": v["product"],
        "side": v["side"],
        "lots": int(v["lots"]),
        "order_type": v["order_type"],
        "price": v["price"] or None,
        "trigger_price": v["trigger_price"] or None,
        "accounts": [{"account_id": a.id, "multiplier": a.multiplier} for a in form.accounts if a.chosen],
    }


def _sizing(form: OrderForm) -> list[dict[str, Any]]:
    """Per chosen account what the engine will send: lots, quantity, and why it is skipped or capped."""
    lots = int(form.values["lots"])
    rows = []
    for account in form.accounts:
        if not account.chosen:
            continue
        sized = account_lots(lots, parse_multiplier(account.multiplier), account.max_lots)
        if account.blocked is not None:
            rows.append({"account": account, "lots": 0, "quantity": 0, "note": f"{account.blocked}."})
            continue
        rows.append(
            {
                "account": account,
                "lots": sized.lots,
                "quantity": sized.lots * form.lot_size,
                "note": sized.reason,
            }
        )
    return rows


@bp.route("", methods=["GET"])
def order_form() -> ResponseReturnValue:
    """The mirror order form (accounts with their allocation multipliers as defaults)."""
    accounts = _accounts()
    values = {"exchange": "NFO", "side": "BUY", "lots": "1", "order_type": "MARKET", "product": "NRML"}
    values.update({k: v for k, v in request.args.items() if k in ("symbol", "exchange", "product")})
    form = OrderForm(values, accounts)
    for account in accounts:
        account.multiplier = account.default_multiplier
    # The send token is made once here and carried through the review: a review page posted again
    # (the browser's "resubmit?") still sends under the same token, so it is one command.
    return render_template("mirror/form.html", form=form, command_token=secrets.token_urlsafe(24))


def _form_token() -> str:
    """The command token the form carries (a fresh one when it has none, e.g. an old tab)."""
    token = (request.form.get("command_token") or "").strip()
    if not token or len(token) > COMMAND_TOKEN_MAX:
        return secrets.token_urlsafe(24)
    return token


@bp.route("/review", methods=["POST"])
def review() -> ResponseReturnValue:
    """Validate the form: with errors, the form again (400, every error inline); else the
    confirmation with each account's lots and quantity and this page's command token."""
    form = read_form(request.form)
    token = _form_token()
    if not form.valid:
        return render_template("mirror/form.html", form=form, command_token=token), 400
    return render_template("mirror/confirm.html", form=form, sizing=_sizing(form), command_token=token)


@bp.route("/send", methods=["POST"])
def send() -> ResponseReturnValue:
    """Queue the reviewed order as one ``mirror_order`` command (the token makes a double submit one
    command) and open its result page."""
    form = read_form(request.form)
    if not form.valid:
        return render_template("mirror/form.html", form=form, command_token=_form_token()), 400
    token = (request.form.get("command_token") or "").strip()
    if not token or len(token) > COMMAND_TOKEN_MAX:
        flash("This form is out of date; review the order again.", "warning")
        return render_template("mirror/form.html", form=form, command_token=_form_token()), 400
    return _queue(
        _payload(form), token, f"{form.values['side']} {form.values['lots']} lot(s) {form.values['symbol']}"
    )


def _queue(
    payload: dict[str, Any], token: str, what: str, account_id: int | None = None
) -> ResponseReturnValue:
    used = db().scalar(select(EngineCommand).where(EngineCommand.token == token))
    if used is not None:
        return _used(used, token)
    db().commit()  # end the read transaction before writing (SQLite: a second submit may have written)
    try:
        command = request_mirror(db(), user_id=me().id, payload=payload, token=token, now=now())
    except ExecutionError as exc:
        abort(400, str(exc))
    log_activity(db(), "mirror_order_requested", user_id=me().id, account_id=account_id, details=what)
    try:
        db().commit()
    except IntegrityError:
        # Two submits of one page raced past the check above: the token's unique index kept it to one.
        db().rollback()
        used = db().scalar(select(EngineCommand).where(EngineCommand.token == token))
        if used is None:
            raise
        return _used(used, token)
    flash(f"Mirror order requested: {what}. The engine sends it; results appear below.", "success")
    return redirect(url_for("mirror.order", command_id=command.id), code=303)


def _used(command: EngineCommand, token: str) -> ResponseReturnValue:
    if command.user_id != me().id or command.kind != MIRROR_ORDER:
        abort(409)
    flash("This order was already requested; here is its result.", "warning")
    return redirect(url_for("mirror.order", command_id=command.id), code=303)


def _order_context(command_id: int) -> dict[str, Any]:
    command = command_of(db(), command_id, me().id)
    if command is None:
        abort(404)
    names: dict[int, str] = dict(
        db()
        .execute(
            select(TradingAccount.id, TradingAccount.account_name).where(TradingAccount.user_id == me().id)
        )
        .tuples()
        .all()
    )
    result = command.result if isinstance(command.result, dict) else {}
    reports = {r.get("account_id"): r for r in result.get("accounts", []) if isinstance(r, dict)}
    payload = command.payload or {}
    accounts = [
        {
            "id": a.get("account_id"),
            "name": names.get(a.get("account_id"), "?"),
            "multiplier": a.get("multiplier"),
            "report": reports.get(a.get("account_id")),
        }
        for a in payload.get("accounts", [])
    ]
    return {
        "command": command,
        "payload": payload,
        "accounts": accounts,
        "done": command.status not in ACTIVE,
        "generated_at": market_now(),
        "poll_seconds": POLL_SECONDS,
    }


@bp.route("/orders/<id:command_id>")
def order(command_id: int) -> ResponseReturnValue:
    """A mirror order's result page: per account orders, fills, average and status (live until done)."""
    return render_template("mirror/order.html", **_order_context(command_id))


@bp.route("/orders/<id:command_id>/live")
def order_live(command_id: int) -> ResponseReturnValue:
    """The result page's live region; 286 once the command has ended (htmx stops polling)."""
    context = _order_context(command_id)
    return render_template("mirror/_order_live.html", **context), 286 if context["done"] else 200


# ------------------------------------------------------------------------------------------ check


# Mirror-check corrections older than this (wall clock) are long in the positions: not read.
CORRECTIONS_WINDOW = timedelta(days=1)


def _checks(run_id: int | None = None) -> list[mirror_check.RunCheck]:
    at = market_now()
    current = state()
    # The longest one positionbook read may take, on the market clock the positions are stamped by.
    read_seconds = current.settings.http_connect_timeout + current.settings.http_read_timeout
    margin = timedelta(seconds=read_seconds * clock_speed(current.market_clock))
    return mirror_check.check_runs(
        db(),
        me().id,
        now=at,
        stale_after=stale_after(at),
        run_id=run_id,
        read_margin=margin,
        commands_since=now() - CORRECTIONS_WINDOW,
    )


def _check_context(run_id: int | None) -> dict[str, Any]:
    if run_id is not None:
        _own_run(run_id)
    return {
        "checks": _checks(run_id),
        "run_filter": run_id,
        "generated_at": market_now(),
        "poll_seconds": POLL_SECONDS,
    }


def _own_run(run_id: int) -> StrategyRun:
    from algomirror.db.models import Strategy

    run = db().scalar(
        select(StrategyRun)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(StrategyRun.id == run_id, Strategy.user_id == me().id)
    )
    if run is None:
        abort(404)
    return run


def _run_filter() -> int | None:
    raw = request.args.get("run") or ""
    if not raw:
        return None
    run_id = parse_id(raw)
    if run_id is None:
        abort(404)
    return run_id


@bp.route("/check")
def check() -> ResponseReturnValue:
    """Every open run of the user (or ``?run=<id>``): intended legs against the broker's positions."""
    return render_template("mirror/check.html", **_check_context(_run_filter()))


@bp.route("/check/live")
def check_live() -> ResponseReturnValue:
    """The mirror check's live region."""
    return render_template("mirror/_check_live.html", **_check_context(_run_filter()))


def _drift(run_id: int) -> tuple[mirror_check.RunCheck, MirrorRow, str]:
    """The drift a Bring-in-line / Accept page is about (from the query string or form), as it is now;
    404 when the run, account or row is not the user's, 409-page when it is no longer a drift."""
    _own_run(run_id)
    values = request.values
    account_id = parse_id(values.get("account"))
    if account_id is None:
        abort(404)
    checks = _checks(run_id)
    if not checks:
        abort(404)  # closed meanwhile: nothing to check
    found = mirror_check.find_row(
        checks[0],
        account_id,
        values.get("symbol") or "",
        values.get("exchange") or "",
        values.get("product") or "",
    )
    if found is None:
        abort(404)
    snapshot = checks[0].snapshots[found.account_id]
    return checks[0], found, snapshot.account_name


def _still_same(row: MirrorRow) -> bool:
    """The quantities the confirmation showed are still the current ones."""
    try:
        shown = (int(request.form.get("broker", "")), int(request.form.get("intended", "")))
    except ValueError:
        return False
    return shown == (row.broker, row.intended)


@bp.route("/check/<id:run_id>/fix", methods=["GET", "POST"])
def fix(run_id: int) -> ResponseReturnValue:
    """GET: confirm the order that brings one drift in line (side, quantity = the difference).
    POST: queue it as a ``mirror_order`` for that one account (through the journal)."""
    run, row, account_name = _drift(run_id)
    pending = run.corrections.get(row.key)
    # An entry or exit on its way, a leg in error or a position another run shares: not corrected.
    blocked = run.blocked(row)
    stale = not row.is_drift or row.accepted or (blocked is not None and pending is None)
    if request.method == "GET" or stale or pending is not None:
        # A correction already requested (still running, or not yet in the synced positions) is not
        # offered again: the same drift would otherwise be corrected twice.
        return render_template(
            "mirror/drift.html",
            action="fix",
            run=run,
            row=row,
            account_name=account_name,
            stale=stale,
            blocked=blocked,
            pending_command=pending,
            command_token=secrets.token_urlsafe(24),
        ), (409 if request.method == "POST" else 200)
    if not _still_same(row):
        flash("The positions changed since you confirmed; check the order again.", "warning")
        return redirect(_drift_url("mirror.fix", run_id, row), code=303)
    quantity = abs(row.difference)
    lot = symbol_lot_size(row.symbol)
    payload = {
        "symbol": row.symbol,
        "exchange": row.exchange,
        "product": row.product,
        "side": row.correction_side,
        "lots": max(1, quantity // lot),
        "quantity": quantity,
        "order_type": "MARKET",
        "price": None,
        "trigger_price": None,
        "accounts": [{"account_id": row.account_id, "multiplier": "1"}],
        "run_id": run_id,
        "reason": "mirror_check",
    }
    token = (request.form.get("command_token") or "").strip()
    if not token or len(token) > COMMAND_TOKEN_MAX:
        abort(400)
    what = f"bring in line: {row.correction_side} {quantity} {row.symbol} on {account_name} (run {run_id})"
    return _queue(payload, token, what, row.account_id)


@bp.route("/check/<id:run_id>/accept", methods=["GET", "POST"])
def accept(run_id: int) -> ResponseReturnValue:
    """GET: confirm accepting one drift as it is. POST: record the acceptance for exactly these
    quantities (a later change of either shows the drift again)."""
    run, row, account_name = _drift(run_id)
    blocked = run.blocked(row)
    stale = not row.is_drift or row.accepted or blocked is not None
    if request.method == "GET" or stale:
        return render_template(
            "mirror/drift.html",
            action="accept",
            run=run,
            row=row,
            account_name=account_name,
            stale=stale,
            blocked=blocked,
        ), (409 if stale and request.method == "POST" else 200)
    if not _still_same(row):
        flash("The positions changed since you confirmed; check the drift again.", "warning")
        return redirect(_drift_url("mirror.accept", run_id, row), code=303)
    assert row.broker is not None  # a drift has a known broker quantity
    note = (request.form.get("note") or "").strip()[:500] or None
    db().add(
        MirrorAcceptance(
            user_id=me().id,
            run_id=run_id,
            account_id=row.account_id,
            symbol=row.symbol,
            exchange=row.exchange,
            product=row.product,
            broker_quantity=row.broker,
            intended_quantity=row.intended,
            note=note,
            accepted_at=now(),
        )
    )
    log_activity(
        db(),
        "mirror_drift_accepted",
        user_id=me().id,
        account_id=row.account_id,
        details=f"run {run_id} {row.symbol} {row.product}: broker {row.broker}, intended {row.intended}",
    )
    db().commit()
    flash(
        f"Accepted: {row.symbol} on {account_name} holds {row.broker} where the run intends {row.intended}.",
        "success",
    )
    return redirect(url_for("mirror.check", run=run_id), code=303)


def _drift_url(endpoint: str, run_id: int, row: MirrorRow) -> str:
    return url_for(
        endpoint,
        run_id=run_id,
        account=row.account_id,
        symbol=row.symbol,
        exchange=row.exchange,
        product=row.product,
    )


@bp.app_template_global("mirror_drift_url")
def mirror_drift_url(endpoint: str, run_id: int, row: MirrorRow) -> str:
    """The Bring-in-line / Accept link of one drift row."""
    return _drift_url(endpoint, run_id, row)


@bp.record_once
def _limit_orders(setup: BlueprintSetupState) -> None:
    """The POSTs that queue orders reach brokers: give them the broker-touching rate limit."""
    app = setup.app
    settings = app.extensions["algomirror"].settings
    for limiter in app.extensions.get("limiter", ()):
        for endpoint in ("mirror.send", "mirror.fix"):
            app.view_functions[endpoint] = limiter.limit(settings.ratelimit_broker, methods=["POST"])(
                app.view_functions[endpoint]
            )


__all__ = ["bp", "read_form"]
