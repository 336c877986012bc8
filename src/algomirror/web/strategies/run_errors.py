"""The two ways out of ``error`` on the Execution page (PRODUCT §5.10; docs/execution.md "Exits" 10): a leg
whose exit used up its attempts (5 → ``error`` with a critical ``exit_failed`` alert) is either retried or
confirmed closed outside AlgoMirror.

Routes on the ``strategies`` blueprint (``execution_id`` in the query on GET, in the form on POST):

* ``strategies.retry_exit`` — GET ``/strategies/<id>/run/<run_id>/retry-exit``: the confirmation page;
  POST (CSRF, the page's ``command_token``): queue one ``exit`` command through
  :func:`~algomirror.engine.exit_planning.retry_exit` (the engine claims ``error → exiting`` with a fresh
  round of attempts). The token is unique in ``engine_commands``: a double click is one command.
* ``strategies.closed_outside`` — GET ``/strategies/<id>/run/<run_id>/closed-outside``: the form asking
  the price the position was closed at; POST (CSRF): record the leg ``exited`` with
  ``closed_externally`` through :func:`~algomirror.engine.exit_records.confirm_closed_outside`. No order
  is sent. A second submit finds the leg no longer in error (the function locks the row and only takes
  ``error``), so it records once; the page says it was already recorded.

An execution outside the run (another user's included) is a 404.
"""

from __future__ import annotations

import secrets
from decimal import Decimal, InvalidOperation

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from algomirror.db.models import Strategy, StrategyExecution, StrategyRun
from algomirror.engine.exit_planning import retry_exit as queue_retry_exit
from algomirror.engine.exit_records import ROUND, ExitOrderWorkingError, confirm_closed_outside
from algomirror.web.context import db, log_activity, market_now, me
from algomirror.web.dashboard import stale_after
from algomirror.web.forms import ConfirmForm
from algomirror.web.ids import parse_id
from algomirror.web.strategies import run_data
from algomirror.web.strategies.runs import _run, _strategy, _token, _token_used, queue_once
from algomirror.web.strategies.views import bp

PRICE_TEXT_MAX = 20
# exit_records keeps exit prices to 4 decimals (its weighted averages): a typed price is held to that.
PRICE_PLACES = 4
PRICE_MAX = Decimal("10000000")  # ₹ per unit; anything above is a typing slip, not an option price


def parse_price(text: str) -> tuple[Decimal | None, str | None]:
    """The exit price a person typed (₹ per unit, ``,`` thousands separators allowed): ``(price, None)``,
    else ``(None, why)`` for an empty, non-numeric, non-positive, too precise or too large value."""
    raw = text.strip().replace(",", "")
    if not raw:
        return None, "Enter the price the position was closed at."
    if len(raw) > PRICE_TEXT_MAX:
        return None, "Enter the price as a number, like 112.35."
    try:
        price = Decimal(raw)
    except InvalidOperation:
        return None, "Enter the price as a number, like 112.35."
    if not price.is_finite():
        return None, "Enter the price as a number, like 112.35."
    if price <= 0:
        return None, "The price must be more than 0."
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_PLACES:
        return None, f"Use at most {PRICE_PLACES} decimal places."
    if price >= PRICE_MAX:
        return None, "That price is too large for an option or future; check it."
    return price, None


def _error_row(run: StrategyRun) -> run_data.ExecutionRow:
    """The execution the request names, within ``run`` (404 outside it: another user's too)."""
    execution_id = parse_id(request.values.get("execution_id"))
    view = run_data.run_view(db(), me().id, run, market_now(), stale_after(market_now()))
    row = next((r for r in view.rows if r.id == execution_id), None)
    if row is None:
        abort(404)
    return row


def _describe(row: run_data.ExecutionRow) -> str:
    return f"{row.leg_label} · {row.symbol or '—'} on {row.account_name}"


def _page(
    strategy: Strategy,
    run: StrategyRun,
    row: run_data.ExecutionRow,
    action: str,
    *,
    error: str | None = None,
    price_text: str = "",
    price_error: str | None = None,
    code: int = 200,
) -> tuple[str, int]:
    page = render_template(
        "strategies/exit_resolve.html",
        strategy=strategy,
        run=run,
        row=row,
        action=action,
        description=_describe(row),
        error=error,
        price_text=price_text,
        price_error=price_error,
        attempts=ROUND,
        # The idempotency key of the retry this page would queue: a second submit is the same command.
        command_token=secrets.token_urlsafe(24),
        form=ConfirmForm(),
    )
    return page, code


@bp.route("/<id:strategy_id>/run/<id:run_id>/retry-exit", methods=["GET", "POST"], endpoint="retry_exit")
def retry_exit_view(strategy_id: int, run_id: int) -> ResponseReturnValue:
    """GET: confirm a retry of one leg's exit (``execution_id`` in the query). POST (CSRF,
    ``command_token``): queue one ``exit`` command that takes the leg ``error → exiting`` and go back to
    the run page; the same token twice is one command ("already requested")."""
    strategy = _strategy(strategy_id)
    found = _run(strategy, run_id)
    row = _error_row(found)
    back = url_for("strategies.run", strategy_id=strategy.id, run_id=found.id)
    if request.method == "GET":
        return _page(strategy, found, row, "retry")
    if not ConfirmForm().validate_on_submit():
        abort(400)
    token = _token()
    if token is None:
        stale = "This form is out of date; confirm the retry again."
        return _page(strategy, found, row, "retry", error=stale, code=400)
    if _token_used(token):
        flash("This retry is already requested.", "warning")
        return redirect(back, code=303)
    if not row.retryable:
        flash(f"Nothing to retry: {_describe(row)} is {row.status}, not an exit in error.", "warning")
        return redirect(back, code=303)
    # End the read transaction before writing (SQLite: see runs.exit_run).
    db().commit()
    command = queue_once(
        lambda: queue_retry_exit(db(), user_id=me().id, execution_id=row.id, token=token),
        token=token,
        action="strategy_exit_retry_requested",
        account_id=row.account_id,
        details=lambda c: (
            f"{strategy.name} (id {strategy.id}) run {found.id}: retry exit of {_describe(row)} "
            f"(execution {row.id}, command {c.id})"
        ),
        already="This retry is already requested.",
    )
    if command is None:
        return redirect(back, code=303)
    flash(
        f"Retry of the exit of {_describe(row)} queued: up to {ROUND} more attempts. "
        "The status changes here as the engine places the exit orders.",
        "success",
    )
    return redirect(back, code=303)


@bp.route(
    "/<id:strategy_id>/run/<id:run_id>/closed-outside", methods=["GET", "POST"], endpoint="closed_outside"
)
def closed_outside(strategy_id: int, run_id: int) -> ResponseReturnValue:
    """GET: the form asking the price one leg in error was closed at outside AlgoMirror. POST (CSRF,
    ``price``): a bad price re-shows the form with its inline error (400, nothing written); a good one
    records the leg ``exited`` with ``closed_externally`` and its realised P&L (no order is sent), and
    goes back to the run page."""
    strategy = _strategy(strategy_id)
    found = _run(strategy, run_id)
    row = _error_row(found)
    back = url_for("strategies.run", strategy_id=strategy.id, run_id=found.id)
    if request.method == "GET":
        return _page(strategy, found, row, "closed")
    if not ConfirmForm().validate_on_submit():
        abort(400)
    price_text = (request.form.get("price") or "")[:100]
    price, why = parse_price(price_text)
    if price is None:
        return _page(strategy, found, row, "closed", price_text=price_text, price_error=why, code=400)
    if not row.in_error:
        flash(_not_in_error(row), "warning")
        return redirect(back, code=303)
    db().commit()
    try:
        confirm_closed_outside(db(), user_id=me().id, execution_id=row.id, price=price, now=market_now())
        log_activity(
            db(),
            "strategy_leg_closed_outside",
            user_id=me().id,
            account_id=row.account_id,
            details=f"{strategy.name} (id {strategy.id}) run {found.id}: {_describe(row)} confirmed closed "
            f"outside AlgoMirror at {price} (execution {row.id})",
        )
        db().commit()
    except LookupError:
        db().rollback()
        abort(404)
    except ExitOrderWorkingError as exc:
        # An exit order of ours may still fill: nothing written, the form says why (inline).
        db().rollback()
        return _page(strategy, found, row, "closed", price_text=price_text, error=str(exc), code=409)
    except ValueError:
        # The price was checked above, so the leg left ``error`` meanwhile (a second submit, or the
        # engine's retry claimed it): nothing written, say what it is now.
        db().rollback()  # expires what the session held: the row below is read afresh
        current = db().get(StrategyExecution, row.id)
        if current is None:
            abort(404)
        flash(_not_in_error(row, current.status, current.exit_reason), "warning")
        return redirect(back, code=303)
    flash(
        f"Recorded: {_describe(row)} closed outside AlgoMirror at ₹{price}. No order was sent.",
        "success",
    )
    return redirect(back, code=303)


def _not_in_error(row: run_data.ExecutionRow, status: str | None = None, reason: str | None = None) -> str:
    status = status or row.status
    if status == "exited" and (reason or row.exit_reason) == "closed_externally":
        return f"Already recorded: {_describe(row)} is closed outside AlgoMirror."
    return f"Nothing recorded: {_describe(row)} is {status}, not an exit in error."


__all__ = ["closed_outside", "parse_price", "retry_exit_view"]
