"""Preview & execute a saved strategy (issue 11 item 2; PRODUCT §4.2 preview, §5.1).

Routes on the ``strategies`` blueprint:

* ``strategies.preview`` — GET ``/strategies/<id>/preview``: the page; it queues a ``preview_strategy``
  command by POSTing its own form (CSRF, the page's ``command_token``) as soon as it loads (htmx
  ``hx-trigger="load"``; without JavaScript the "Resolve" button does the same). GET with
  ``?command=<id>`` shows that preview. POST: queue the command (a token used twice is the same
  command) and show it.
* ``strategies.preview_live`` — GET ``/strategies/<id>/preview/<command_id>/live``: the polled live
  region — "Resolving…" while the engine works, then the table of legs × accounts (expiry, strike,
  symbol, LTP, lots, quantity, freeze slices, estimated margin, funds, status and reasons, warnings),
  and the Execute form (confirmation). A finished preview answers 286, which stops htmx's polling, and
  a finished preview's region is rendered without its polling trigger.
* ``strategies.execute`` — POST ``/strategies/<id>/execute`` (CSRF, ``preview_command``, the
  confirmation box): queue one ``execute_strategy`` command and go to the run page
  (``strategies.run``), or back to the preview while that page does not exist. Without the tick the
  preview comes back with the error by the checkbox.

One preview is executed at most once: the command's token is :func:`execute_token` of the preview
(``execute:<preview command id>``), so a double submit, a reload or a second tab is the same command.
A new Execute is refused while an ``execute_strategy`` of the strategy is pending or running (its run
is not planned yet) or while its run is open; the engine refuses the first case too
(:func:`~algomirror.engine.resolution.execute_in_flight`), for a race past this check.

No view talks to a broker: the engine's StrategyResolver resolves and plans; every lookup carries the
signed-in user's id, so another user's strategy or command is a 404.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from algomirror.db.models import EngineCommand, Strategy, StrategyRun
from algomirror.db.models.enums import OPEN_RUN_STATUSES
from algomirror.domain.timeutil import ensure_aware, to_ist
from algomirror.engine.resolution import EXECUTE_STRATEGY, PREVIEW_STRATEGY
from algomirror.web.context import db, log_activity, market_now, me, now
from algomirror.web.dashboard import POLL_SECONDS
from algomirror.web.forms import ConfirmForm
from algomirror.web.strategies import repo
from algomirror.web.strategies.run_data import COMMANDS_SCANNED
from algomirror.web.strategies.views import bp

COMMAND_TOKEN_MAX = 100  # engine_commands.token is VARCHAR(100)
# A finished preview's fragment answers this: htmx stops polling the region.
STOP_POLLING = 286
ENGINE_LATE_SECONDS = 15.0
IN_FLIGHT = ("pending", "running")
CONFIRM_ERROR = "Tick the confirmation to execute: orders go to every account shown."


def execute_token(preview_command_id: int) -> str:
    """The one ``execute_strategy`` token of a preview: the same preview is executed at most once."""
    return f"execute:{preview_command_id}"


def _strategy(strategy_id: int) -> Strategy:
    strategy = repo.get_strategy(db(), me().id, strategy_id)
    if strategy is None:
        abort(404)
    return strategy


def _token() -> str | None:
    token = (request.form.get("command_token") or "").strip()
    return token if token and len(token) <= COMMAND_TOKEN_MAX else None


def _own_command(strategy: Strategy, command_id: int, kind: str) -> EngineCommand:
    command = db().get(EngineCommand, command_id)
    payload = command.payload if command is not None and isinstance(command.payload, dict) else {}
    if (
        command is None
        or command.user_id != me().id
        or command.kind != kind
        or payload.get("strategy_id") != strategy.id
    ):
        abort(404)
    return command


def _queue(strategy: Strategy, kind: str, token: str, payload: dict[str, Any]) -> EngineCommand | None:
    """The command of this page token: the existing one when the token was used for the same request
    (a double submit), a new one otherwise; None when the token belongs to something else."""
    used = db().scalar(select(EngineCommand).where(EngineCommand.token == token))
    if used is not None:
        same = used.user_id == me().id and used.kind == kind
        return used if same and (used.payload or {}).get("strategy_id") == strategy.id else None
    # End the read transaction before writing (SQLite: a transaction that has read cannot take the
    # write lock once another writer committed).
    db().commit()
    at = now()
    command = EngineCommand(
        user_id=me().id, kind=kind, payload=payload, token=token, status="pending", created_at=at
    )
    command.updated_at = at
    db().add(command)
    try:
        db().commit()
    except IntegrityError:
        # Two submits of one form raced past the check: the token's unique index kept one.
        db().rollback()
        return db().scalar(select(EngineCommand).where(EngineCommand.token == token))
    return command


# ------------------------------------------------------------------------------------------ view model


def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


@dataclass
class PreviewView:
    """The preview JSON shaped for the table: legs in order, each with its cells in account order."""

    data: dict[str, Any]
    legs: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    cells: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, data: dict[str, Any]) -> PreviewView:
        view = cls(data)
        view.legs = [
            dict(
                leg,
                ltp=_dec(leg.get("ltp")),
                strike_text=leg.get("strike"),
                expiry_date=date.fromisoformat(leg["expiry"]) if leg.get("expiry") else None,
            )
            for leg in data["legs"]
        ]
        view.accounts = [
            dict(
                a,
                available_funds=_dec(a.get("available_funds")),
                estimated_margin=_dec(a.get("estimated_margin")),
            )
            for a in data["accounts"]
        ]
        for row in data["rows"]:
            view.cells[(row["leg_id"], row["account_id"])] = dict(
                row, estimated_margin=_dec(row.get("estimated_margin"))
            )
        return view

    @property
    def plannable(self) -> int:
        return int(self.data.get("plannable") or 0)

    @property
    def instruments(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, {spot, atm as Decimal, error}) per instrument, by name."""
        items = (self.data.get("instruments") or {}).items()
        return sorted(
            (name, {"spot": _dec(i.get("spot")), "atm": _dec(i.get("atm")), "error": i.get("error")})
            for name, i in items
        )

    @property
    def resolved_at(self) -> datetime | None:
        raw = self.data.get("resolved_at")
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None


def _execute_of(command: EngineCommand) -> EngineCommand | None:
    """The ``execute_strategy`` queued from preview ``command`` (None while it was not executed)."""
    return db().scalar(select(EngineCommand).where(EngineCommand.token == execute_token(command.id)))


def _in_flight(strategy: Strategy) -> EngineCommand | None:
    """The user's ``execute_strategy`` of ``strategy`` still pending or running (its run not planned
    yet), among the latest :data:`COMMANDS_SCANNED` of that kind; None when there is none."""
    for command in db().scalars(
        select(EngineCommand)
        .where(
            EngineCommand.user_id == me().id,
            EngineCommand.kind == EXECUTE_STRATEGY,
            EngineCommand.status.in_(IN_FLIGHT),
        )
        .order_by(EngineCommand.id.desc())
        .limit(COMMANDS_SCANNED)
    ):
        if (command.payload or {}).get("strategy_id") == strategy.id:
            return command
    return None


def _live_context(
    strategy: Strategy, command: EngineCommand, *, execute_error: str | None = None
) -> dict[str, Any]:
    result = command.result if isinstance(command.result, dict) else {}
    data = result.get("preview")
    waited = (now() - ensure_aware(command.created_at)).total_seconds() if command.created_at else 0.0
    finished = command.status in ("done", "failed")
    return {
        "strategy": strategy,
        "command": command,
        # Still queued after this long: the engine is probably not running (say so, keep polling).
        "engine_late": command.status == "pending" and waited > ENGINE_LATE_SECONDS,
        "preview": PreviewView.of(data) if isinstance(data, dict) and command.status == "done" else None,
        # Only a finished preview can be executed; what stands in the way is read then.
        "executed": _execute_of(command) if command.status == "done" else None,
        "in_flight": _in_flight(strategy) if command.status == "done" else None,
        "open_run_now": _open_run(strategy) if command.status == "done" else None,
        "execute_error": execute_error,
        # A finished region is rendered without its polling trigger (nothing more can change).
        "finished": finished,
        "generated_at": market_now(),
        "poll_seconds": POLL_SECONDS,
        "today": to_ist(market_now()).date(),
        "form": ConfirmForm(),
        # The Execution page's routes (another module): linked only once they exist.
        "url_rules": current_app.view_functions.keys(),
    }


def _open_run(strategy: Strategy) -> int | None:
    return db().scalar(
        select(StrategyRun.id).where(
            StrategyRun.strategy_id == strategy.id, StrategyRun.status.in_(OPEN_RUN_STATUSES)
        )
    )


def _page(
    strategy: Strategy,
    command: EngineCommand | None,
    *,
    error: str | None = None,
    execute_error: str | None = None,
    code: int = 200,
) -> ResponseReturnValue:
    context: dict[str, Any] = {
        "strategy": strategy,
        "preview_token": secrets.token_urlsafe(24),
        "error": error,
        "form": ConfirmForm(),
        "poll_seconds": POLL_SECONDS,
        "command": command,
    }
    if command is not None:
        context.update(_live_context(strategy, command, execute_error=execute_error))
    return render_template("strategies/preview.html", **context), code


# ----------------------------------------------------------------------------------------------- routes


@bp.route("/<id:strategy_id>/preview", methods=["GET", "POST"])
def preview(strategy_id: int) -> ResponseReturnValue:
    """GET: the page (queues its preview on load); ``?command=<id>`` shows that preview. POST (CSRF,
    ``command_token``): queue a ``preview_strategy`` command; an htmx POST gets the live region, a plain
    one a 303 to the page of that command."""
    strategy = _strategy(strategy_id)
    if request.method == "GET":
        raw = request.args.get("command", "")
        command = _own_command(strategy, int(raw), PREVIEW_STRATEGY) if raw.isdigit() else None
        return _page(strategy, command)
    if not ConfirmForm().validate_on_submit():
        return _page(strategy, None, error="This form is out of date; resolve the preview again.", code=400)
    token = _token()
    if token is None:
        return _page(strategy, None, error="This form is out of date; resolve the preview again.", code=400)
    command = _queue(strategy, PREVIEW_STRATEGY, token, {"strategy_id": strategy.id})
    if command is None:
        return _page(strategy, None, error="This form was already used; resolve the preview again.", code=409)
    if request.headers.get("HX-Request") == "true":
        body = render_template("strategies/_preview_region.html", **_live_context(strategy, command))
        # The address bar names this preview, so a reload shows it instead of queuing another.
        page = url_for("strategies.preview", strategy_id=strategy.id, command=command.id)
        return body, 200, {"HX-Replace-Url": page}
    return redirect(url_for("strategies.preview", strategy_id=strategy.id, command=command.id), code=303)


@bp.route("/<id:strategy_id>/preview/<id:command_id>/live")
def preview_live(strategy_id: int, command_id: int) -> ResponseReturnValue:
    """The polled live region of one preview (286 once it has finished: polling stops)."""
    strategy = _strategy(strategy_id)
    command = _own_command(strategy, command_id, PREVIEW_STRATEGY)
    body = render_template("strategies/_preview_live.html", **_live_context(strategy, command))
    return body, STOP_POLLING if command.status in ("done", "failed") else 200


@bp.route("/<id:strategy_id>/execute", methods=["POST"])
def execute(strategy_id: int) -> ResponseReturnValue:
    """Queue one ``execute_strategy`` command from a finished preview (CSRF, ``preview_command``, the
    confirmation box ticked); its token is :func:`execute_token` of the preview, so the same preview
    twice is one command. Refused while an Execute of the strategy is pending or running or its run is
    open. Goes to the run page (or back to the preview); without the tick, the preview page (400) with
    the error by the checkbox."""
    strategy = _strategy(strategy_id)
    raw = request.form.get("preview_command", "")
    if not raw.isdigit():
        flash("This form is out of date; preview the strategy again.", "error")
        return redirect(url_for("strategies.preview", strategy_id=strategy.id), code=303)
    source = _own_command(strategy, int(raw), PREVIEW_STRATEGY)
    preview_url = url_for("strategies.preview", strategy_id=strategy.id, command=source.id)
    if not ConfirmForm().validate_on_submit():
        flash("This form is out of date; preview the strategy again.", "error")
        return redirect(preview_url, code=303)
    if source.status != "done":
        flash("This preview is not resolved: wait for it, or resolve the preview again.", "error")
        return redirect(preview_url, code=303)
    if request.form.get("confirm") != "yes":
        return _page(strategy, source, execute_error=CONFIRM_ERROR, code=400)
    if not strategy.is_active:
        flash("The strategy is inactive: activate it to execute.", "error")
        return redirect(preview_url, code=303)
    token = execute_token(source.id)
    used = db().scalar(select(EngineCommand).where(EngineCommand.token == token))
    if used is not None:
        # A double submit, a reload or another tab of this preview: the command it already queued.
        flash("This preview was already executed: resolve the preview again for a new Execute.", "warning")
        return _to_run(strategy, preview_url)
    in_flight = _in_flight(strategy)
    if in_flight is not None:
        flash(
            f"An Execute of “{strategy.name}” (request #{in_flight.id}) is still {in_flight.status}: "
            "wait for its run before executing again.",
            "error",
        )
        return _to_run(strategy, preview_url)
    open_run = _open_run(strategy)
    if open_run is not None:
        # The engine refuses it too; saying so here spares a failed command.
        flash(
            f"Run #{open_run} of “{strategy.name}” is still open: it must close before a new Execute.",
            "error",
        )
        return _to_run(strategy, preview_url)
    payload = {"strategy_id": strategy.id, "source": "manual", "scheduled_for": None}
    command = _queue(strategy, EXECUTE_STRATEGY, token, payload)
    if command is None:
        flash("This form was already used; preview the strategy again.", "error")
        return redirect(preview_url, code=303)
    log_activity(
        db(), "strategy_execute_requested", user_id=me().id, details=f"strategy {strategy.id} {strategy.name}"
    )
    db().commit()
    flash(f"Execute of “{strategy.name}” requested: the engine resolves and places it now.", "success")
    return _to_run(strategy, preview_url)


def _to_run(strategy: Strategy, fallback: str) -> ResponseReturnValue:
    """303 to the strategy's run page (another module's; the preview while it does not exist)."""
    if "strategies.run" in current_app.view_functions:
        return redirect(url_for("strategies.run", strategy_id=strategy.id), code=303)
    return redirect(fallback, code=303)


__all__ = ["COMMAND_TOKEN_MAX", "PreviewView", "execute", "execute_token", "preview", "preview_live"]
