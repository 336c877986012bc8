"""The kill switch page (PRODUCT §6.10): per account a daily loss limit, today's P&L
and the switch's state, with Trip and Reset; and the user's global "Flatten everything and stop new
entries" switch with its Reset.

Routes (blueprint ``kill_switch`` at ``/risk/kill``, login required):

* ``kill_switch.index`` — GET: every (not archived) account of the user: limit form, today's P&L,
  state (no limit / armed / tripped at … because …), pending requests, Trip / Reset links; the global
  switch. The P&L column is rendered from the database (realised P&L of today's exits in closed runs;
  accounts with open positions wait for the engine) and kept live by ``static/js/kill_switch.js`` from
  the engine's ``user:{uid}:kill_switch`` ``pnl`` events (unknown says why).
* ``kill_switch.state`` — GET ``/state``: the page's state parts as a fragment (each account's state and
  Trip / Reset cells, the global switch's queued note and links, the "as of" time; ``data-pending``: a
  kill switch command still waits for the engine). ``kill_switch.js`` swaps it in on a ``kill_switch``
  alert, on every (re)connect of the stream and while a queued command is pending: no page reload. Only
  the user's own accounts; a poll after sign-out is a 401 with ``HX-Redirect``.
* ``kill_switch.limit`` — POST ``/<id>/limit``: save the daily loss limit (₹ > 0, at most 2 decimals;
  blank = none); an invalid value re-renders the page with the error inline (400).
* ``kill_switch.trip`` / ``kill_switch.reset`` — GET ``/<id>/trip`` | ``/<id>/reset``: the confirmation
  page; POST (CSRF, the page's ``command_token``): queue one ``kill_switch`` command for the engine.
* ``kill_switch.flatten`` / ``kill_switch.reset_all`` — GET ``/flatten`` | ``/reset-all``: confirmation
  (flatten needs a ticked box and the word FLATTEN typed); POST: queue ``trip_all`` / ``reset_all``.

No view changes a position, a latch or a halt: the engine's kill switch component does, in one
transaction, and the page shows its result. A double submit is one command (unique token). Another
user's account is a 404. Every change is logged in the activity log.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from werkzeug.wrappers import Response as WerkzeugResponse
from wtforms import BooleanField, StringField
from wtforms.validators import ValidationError

from algomirror.db.models import EngineCommand, Strategy, StrategyExecution, StrategyRun, TradingAccount
from algomirror.domain.money import format_inr
from algomirror.engine.day_pnl import realised_today
from algomirror.engine.kill_switch import KILL_SWITCH_COMMAND, Action, queue_command
from algomirror.web.context import db, log_activity, market_now, me
from algomirror.web.dashboard import require_sign_in
from algomirror.web.forms import ConfirmForm
from algomirror.web.strategies.forms import NumberText
from algomirror.web.strategies.runs import queue_once

bp = Blueprint("kill_switch", __name__, url_prefix="/risk/kill")

COMMAND_TOKEN_MAX = 100  # engine_commands.token is VARCHAR(100)
LIMIT_MAX = Decimal("100000000")  # ₹10 crore: a typo guard, far above any account's daily loss
CONFIRM_WORD = "FLATTEN"
_OPEN = ("pending", "active", "exiting", "error")
_ACTION_TEXT = {
    "trip": "trip",
    "reset": "reset",
    "trip_all": "flatten everything",
    "reset_all": "reset every account",
}


class LimitForm(FlaskForm):
    """One account's daily loss limit (₹; blank = none). Prefixed per account: one page holds many."""

    daily_loss_limit = NumberText(
        "Daily loss limit (₹)",
        "The daily loss limit",
        places=2,
        maximum=None,
        description="Blank: no limit. Trips when today's P&L is at or below minus this amount.",
    )

    def validate_daily_loss_limit(self, field: NumberText) -> None:
        """At most :data:`LIMIT_MAX` (the number check has run first)."""
        if field.value is not None and field.value > LIMIT_MAX:
            raise ValidationError(f"The daily loss limit must be at most {format_inr(LIMIT_MAX, places=0)}.")


class FlattenForm(FlaskForm):
    """The global switch's confirmation: a ticked box and the word typed."""

    understand = BooleanField("I understand: every open position on every account is exited at MARKET")
    confirm_text = StringField(f"Type {CONFIRM_WORD} to confirm")

    def validate_understand(self, field: BooleanField) -> None:
        if not field.data:
            raise ValidationError("Tick the box to confirm.")

    def validate_confirm_text(self, field: StringField) -> None:
        if (field.data or "").strip().upper() != CONFIRM_WORD:
            raise ValidationError(f"Type {CONFIRM_WORD} (the word, in capitals) to confirm.")


def _state_of(account: TradingAccount) -> str:
    if account.kill_switch_at is not None:
        return "tripped"
    return "armed" if account.daily_loss_limit is not None else "off"


@dataclass
class StateLine:
    """One row of the state fragment: the account and its queued kill switch requests."""

    account: TradingAccount
    pending: list[str]

    @property
    def state(self) -> str:
        """``tripped`` | ``armed`` (a limit, no latch) | ``off``."""
        return _state_of(self.account)


@dataclass
class AccountLine:
    """One row of the page."""

    account: TradingAccount
    form: LimitForm
    realised: Decimal | None
    open_count: int
    pending: list[str]

    @property
    def pnl(self) -> Decimal | None:
        """Today's P&L when the database alone knows it (no open position), else None."""
        return self.realised if self.open_count == 0 else None

    @property
    def state(self) -> str:
        """``tripped`` | ``armed`` (a limit, no latch) | ``off``."""
        return _state_of(self.account)


require_sign_in(bp)


def _own(account_id: int) -> TradingAccount:
    account = db().scalar(
        select(TradingAccount).where(
            TradingAccount.id == account_id,
            TradingAccount.user_id == me().id,
            TradingAccount.archived_at.is_(None),
        )
    )
    if account is None:
        abort(404)
    return account


def _accounts() -> list[TradingAccount]:
    return list(
        db().scalars(
            select(TradingAccount)
            .where(TradingAccount.user_id == me().id, TradingAccount.archived_at.is_(None))
            .order_by(TradingAccount.account_name, TradingAccount.id)
        )
    )


def _pending() -> dict[int | None, list[str]]:
    """The user's kill switch commands not yet run, per account (None: the whole-user ones)."""
    rows = db().scalars(
        select(EngineCommand).where(
            EngineCommand.user_id == me().id,
            EngineCommand.kind == KILL_SWITCH_COMMAND,
            EngineCommand.status.in_(("pending", "running")),
        )
    )
    found: dict[int | None, list[str]] = {}
    for row in rows:
        payload = row.payload if isinstance(row.payload, dict) else {}
        account = payload.get("account_id")
        action = str(payload.get("action"))
        found.setdefault(account if isinstance(account, int) else None, []).append(
            _ACTION_TEXT.get(action, action)
        )
    return found


def _lines(errors: dict[int, LimitForm] | None = None) -> list[AccountLine]:
    accounts = _accounts()
    ids = [a.id for a in accounts]
    at = market_now()
    # The open runs' part is the engine's (live): the page counts only what closed runs realised today.
    open_runs = set(
        db().scalars(
            select(StrategyRun.id)
            .join(Strategy, Strategy.id == StrategyRun.strategy_id)
            .where(Strategy.user_id == me().id, StrategyRun.ended_at.is_(None))
        )
    )
    realised = realised_today(db(), ids, at, open_runs)
    counts = dict(
        db()
        .execute(
            select(StrategyExecution.account_id, func.count(StrategyExecution.id))
            .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
            .where(
                StrategyExecution.account_id.in_(ids),
                StrategyExecution.status.in_(_OPEN),
                StrategyRun.ended_at.is_(None),
            )
            .group_by(StrategyExecution.account_id)
        )
        .tuples()
        .all()
    )
    pending = _pending()
    lines = []
    for account in accounts:
        form = (errors or {}).get(account.id)
        if form is None:
            form = LimitForm(prefix=f"a{account.id}", formdata=None)
            form.daily_loss_limit.data = (
                "" if account.daily_loss_limit is None else f"{account.daily_loss_limit:.2f}"
            )
        lines.append(
            AccountLine(
                account=account,
                form=form,
                realised=realised.get(account.id, (None, None))[0],
                open_count=int(counts.get(account.id, 0)),
                pending=pending.get(account.id, []),
            )
        )
    return lines


def _index_page(errors: dict[int, LimitForm] | None = None, code: int = 200) -> tuple[str, int]:
    lines = _lines(errors)
    pending = _pending()
    page = render_template(
        "risk/kill.html",
        lines=lines,
        any_tripped=any(line.account.kill_switch_at is not None for line in lines),
        pending_all=pending.get(None, []),
        any_pending=bool(pending),
        generated_at=market_now(),
        user_id=me().id,
    )
    return page, code


@bp.route("/")
def index() -> ResponseReturnValue:
    """The kill switch page (see the module docstring)."""
    return _index_page()


@bp.route("/state")
def state() -> ResponseReturnValue:
    """The page's state parts (see the module docstring): ``risk/_kill_state.html``, never cached."""
    accounts = _accounts()
    pending = _pending()
    lines = [StateLine(account=a, pending=pending.get(a.id, [])) for a in accounts]
    page = render_template(
        "risk/_kill_state.html",
        lines=lines,
        any_tripped=any(a.kill_switch_at is not None for a in accounts),
        pending_all=pending.get(None, []),
        any_pending=bool(pending),
        generated_at=market_now(),
    )
    return page, 200, {"Cache-Control": "no-store"}


@bp.route("/<id:account_id>/limit", methods=["POST"])
def limit(account_id: int) -> ResponseReturnValue:
    """Save one account's daily loss limit (CSRF; blank = none). Errors inline, 400."""
    account = _own(account_id)
    form = LimitForm(prefix=f"a{account.id}")
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400)
        return _index_page({account.id: form}, 400)
    new = form.daily_loss_limit.value
    old = account.daily_loss_limit
    if new != old:
        account.daily_loss_limit = new
        before = "none" if old is None else format_inr(old)
        after = "none" if new is None else format_inr(new)
        log_activity(
            db(),
            "kill_switch_limit_changed",
            user_id=me().id,
            account_id=account.id,
            details=f"{account.account_name}: daily loss limit {before} → {after}",
        )
        db().commit()
    text = "removed" if new is None else f"set to {format_inr(new)}"
    flash(f"{account.account_name}: daily loss limit {text}.", "success")
    return redirect(url_for("kill_switch.index"), code=303)


@bp.route("/<id:account_id>/trip", methods=["GET", "POST"])
def trip(account_id: int) -> ResponseReturnValue:
    """GET: confirm tripping one account. POST (CSRF, ``command_token``): queue the ``trip`` command."""
    account = _own(account_id)
    return _confirmed("trip", account)


@bp.route("/<id:account_id>/reset", methods=["GET", "POST"])
def reset(account_id: int) -> ResponseReturnValue:
    """GET: confirm resetting one tripped account. POST: queue the ``reset`` command."""
    account = _own(account_id)
    return _confirmed("reset", account)


@bp.route("/flatten", methods=["GET", "POST"])
def flatten() -> ResponseReturnValue:
    """GET: confirm the global switch (ticked box + typed word). POST: queue ``trip_all``; an unticked
    box or a wrong word re-renders the page with the error inline (400)."""
    if request.method == "GET":
        return _flatten_page(FlattenForm(formdata=None))
    form = FlattenForm()
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400)
        return _flatten_page(form, code=400)
    return _queue("trip_all", None)


@bp.route("/reset-all", methods=["GET", "POST"])
def reset_all() -> ResponseReturnValue:
    """GET: confirm resetting every tripped account. POST: queue ``reset_all``."""
    return _confirmed("reset_all", None)


def _confirmed(action: Action, account: TradingAccount | None) -> ResponseReturnValue:
    if request.method == "GET":
        return _confirm_page(action, account)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    return _queue(action, account)


def _open_count(account_id: int | None) -> int:
    query = (
        select(func.count(StrategyExecution.id))
        .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
        .join(TradingAccount, TradingAccount.id == StrategyExecution.account_id)
        .where(
            TradingAccount.user_id == me().id,
            StrategyExecution.status.in_(_OPEN),
            StrategyRun.ended_at.is_(None),
        )
    )
    if account_id is not None:
        query = query.where(StrategyExecution.account_id == account_id)
    return int(db().scalar(query) or 0)


def _confirm_page(
    action: Action, account: TradingAccount | None, *, error: str | None = None, code: int = 200
) -> tuple[str, int]:
    tripped = [a for a in _accounts() if a.kill_switch_at is not None]
    page = render_template(
        "risk/kill_confirm.html",
        action=action,
        account=account,
        tripped=tripped,
        open_count=_open_count(account.id if account is not None else None),
        error=error,
        command_token=secrets.token_urlsafe(24),
        form=ConfirmForm(),
    )
    return page, code


def _flatten_page(form: FlattenForm, *, error: str | None = None, code: int = 200) -> tuple[str, int]:
    page = render_template(
        "risk/kill_flatten.html",
        form=form,
        accounts=_accounts(),
        open_count=_open_count(None),
        error=error,
        command_token=request.form.get("command_token") or secrets.token_urlsafe(24),
        confirm_word=CONFIRM_WORD,
    )
    return page, code


def _token() -> str | None:
    token = (request.form.get("command_token") or "").strip()
    return token if token and len(token) <= COMMAND_TOKEN_MAX else None


def _queue(action: Action, account: TradingAccount | None) -> WerkzeugResponse | tuple[str, int]:
    token = _token()
    if token is None:
        if action == "trip_all":
            return _flatten_page(
                FlattenForm(formdata=None), error="This form is out of date; confirm again.", code=400
            )
        return _confirm_page(action, account, error="This form is out of date; confirm again.", code=400)
    back = redirect(url_for("kill_switch.index"), code=303)
    if action == "reset" and account is not None and account.kill_switch_at is None:
        flash(f"{account.account_name}: the kill switch is not tripped; nothing to reset.", "warning")
        return back
    if action == "reset_all" and not any(a.kill_switch_at is not None for a in _accounts()):
        flash("No account's kill switch is tripped; nothing to reset.", "warning")
        return back
    account_id = account.id if account is not None else None
    name = account.account_name if account is not None else "every account"
    # End the read transaction before writing (SQLite: see strategies.runs.exit_run).
    db().commit()
    details = _details(action, name)
    command = queue_once(
        lambda: queue_command(db(), user_id=me().id, action=action, token=token, account_id=account_id),
        token=token,
        action=f"kill_switch_{action}_requested",
        account_id=account_id,
        details=lambda c: f"{details} (command {c.id})",
        already="This request is already queued.",
    )
    if command is not None:
        flash(
            f"{details[:1].upper()}{details[1:]}: queued. "
            "The state below changes once the engine has done it.",
            "success",
        )
    return back


def _details(action: Action, name: str) -> str:
    return {
        "trip": f"kill switch trip of {name}",
        "reset": f"kill switch reset of {name}",
        "trip_all": "flatten everything and stop new entries",
        "reset_all": "kill switch reset of every account",
    }[action]


__all__ = ["bp"]
