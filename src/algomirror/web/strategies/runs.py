"""The Execution page (issue 11 item 11; PRODUCT §5.1, §5.10, §6.7): a run's legs × accounts live, and the
exit buttons that queue ``exit`` commands for the engine.

Routes on the ``strategies`` blueprint:

* ``strategies.run`` — GET ``/strategies/<id>/run`` (the open run, else the latest) and
  ``/strategies/<id>/run/<run_id>``; ``strategies.run_live`` is its polled fragment.
* ``strategies.exit`` — GET: the confirmation page of an exit of one execution, one account or the run;
  POST (CSRF, the page's ``command_token``): queue one ``exit`` command through
  :func:`~algomirror.engine.exit_planning.request_exit`, flash what was queued, back to the run page.
* ``strategies.exit_all`` — GET ``/strategies/exit-all``: what an "exit all" would act on; POST: queue it.
* ``strategies.retry_exit`` / ``strategies.closed_outside`` — a leg in ``error``: see
  :mod:`~algomirror.web.strategies.run_errors`.

The counts on the buttons are what the engine will act on: a person's exit (reason ``manual``, or
``exit_all``) also retries legs in ``error`` with units open, so those count too.

No view talks to a broker or changes an execution: the engine's ExitExecutor does, and the page shows
its progress. The token is unique in ``engine_commands``, so a double submit is one command. Another
user's strategy, run, execution or account is a 404.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response as WerkzeugResponse

from algomirror.db.models import EngineCommand, Strategy, StrategyExecution, StrategyRun
from algomirror.domain.timeutil import to_ist
from algomirror.engine.exit_planning import request_exit
from algomirror.web.context import db, is_same_site_path, log_activity, market_now, me
from algomirror.web.dashboard import POLL_SECONDS, stale_after
from algomirror.web.forms import ConfirmForm
from algomirror.web.ids import parse_id
from algomirror.web.strategies import repo, run_data
from algomirror.web.strategies.views import bp

PAGE_SCOPES = ("execution", "account", "run")
COMMAND_TOKEN_MAX = 100  # engine_commands.token is VARCHAR(100)
EXIT_ALL_REASON = "exit_all"
SCOPE_TEXT = {
    "execution": "one leg on one account",
    "account": "every leg of one account",
    "run": "the whole strategy run",
}


def _strategy(strategy_id: int) -> Strategy:
    strategy = repo.get_strategy(db(), me().id, strategy_id)
    if strategy is None:
        abort(404)
    return strategy


def _run(strategy: Strategy, run_id: int) -> StrategyRun:
    run = run_data.owned_run(db(), me().id, strategy.id, run_id)
    if run is None:
        abort(404)
    return run


def _view_context(strategy: Strategy, run: StrategyRun) -> dict[str, Any]:
    at = market_now()
    view = run_data.run_view(db(), me().id, run, at, stale_after(at))
    return {
        "strategy": strategy,
        "view": view,
        "run": run,
        "generated_at": at,
        "poll_seconds": POLL_SECONDS,
        "today": to_ist(at).date(),
    }


@bp.route("/<id:strategy_id>/run")
@bp.route("/<id:strategy_id>/run/<id:run_id>")
def run(strategy_id: int, run_id: int | None = None) -> ResponseReturnValue:
    """The Execution page of a run (without ``run_id``: the open run, else the latest; a strategy that
    never ran shows that it has no run)."""
    strategy = _strategy(strategy_id)
    found = run_data.current_run(db(), me().id, strategy.id) if run_id is None else _run(strategy, run_id)
    # After Execute the engine first resolves and plans (execute_strategy): until the run exists, or when
    # planning failed, the bare URL says so instead of showing only the previous run.
    planning = run_data.latest_execute(db(), me().id, strategy.id) if run_id is None else None
    if found is None:
        return render_template(
            "strategies/run.html",
            strategy=strategy,
            view=None,
            run=None,
            past=[],
            planning=planning,
            today=to_ist(market_now()).date(),
        )
    context = _view_context(strategy, found)
    if planning is not None and (
        planning.status == "done" or any(c.id >= planning.id for c in context["view"].commands)
    ):
        planning = None  # it planned this run (or an older one): the run's commands say the rest
    context["planning"] = planning
    context["past"] = run_data.past_runs(db(), strategy.id, exclude=found.id)
    return render_template("strategies/run.html", **context)


@bp.route("/<id:strategy_id>/run/<id:run_id>/live")
def run_live(strategy_id: int, run_id: int) -> ResponseReturnValue:
    """The run page's polled fragment: header, commands, the legs × accounts table and totals."""
    strategy = _strategy(strategy_id)
    return render_template("strategies/_run_live.html", **_view_context(strategy, _run(strategy, run_id)))


# --------------------------------------------------------------------------------------------- exit


class _Target:
    """What one exit form names, checked against the run: scope, ids, a description and how many
    executions it would act on."""

    def __init__(
        self,
        scope: str,
        *,
        execution: StrategyExecution | None = None,
        account_id: int | None = None,
        account_name: str | None = None,
        exitable: int = 0,
        description: str = "",
    ) -> None:
        self.scope = scope
        self.execution = execution
        self.account_id = account_id
        self.account_name = account_name
        self.exitable = exitable
        self.description = description

    def params(self) -> dict[str, Any]:
        """The form's hidden fields (and the confirm page's query string)."""
        values: dict[str, Any] = {"scope": self.scope}
        if self.execution is not None:
            values["execution_id"] = self.execution.id
        if self.account_id is not None:
            values["account_id"] = self.account_id
        return values


def _target(run: StrategyRun) -> _Target:
    """The exit the request names (``scope`` + ``execution_id`` / ``account_id``), within ``run``; 404
    for an id outside the run (another user's included), 400 for an unknown scope."""
    scope = (request.values.get("scope") or "").strip()
    if scope not in PAGE_SCOPES:
        abort(400)
    view = run_data.run_view(db(), me().id, run, market_now(), stale_after(market_now()))
    if scope == "execution":
        execution_id = parse_id(request.values.get("execution_id"))
        row = next((r for r in view.rows if r.id == execution_id), None)
        if row is None:
            abort(404)
        execution = db().get(StrategyExecution, row.id)
        assert execution is not None
        return _Target(
            scope,
            execution=execution,
            account_id=None,
            account_name=row.account_name,
            exitable=1 if row.can_exit else 0,
            description=f"{row.leg_label} · {row.symbol or '—'} on {row.account_name}",
        )
    if scope == "account":
        account_id = parse_id(request.values.get("account_id"))
        group = next((g for g in view.groups if g.account_id == account_id), None)
        if group is None:
            abort(404)
        return _Target(
            scope,
            account_id=group.account_id,
            account_name=group.account_name,
            exitable=group.exitable,
            description=f"every leg on {group.account_name}",
        )
    return _Target(scope, exitable=view.exitable, description=f"every leg on {len(view.groups)} account(s)")


def _confirm_page(
    strategy: Strategy, run: StrategyRun, target: _Target, *, error: str | None = None, code: int = 200
) -> tuple[str, int]:
    page = render_template(
        "strategies/exit_confirm.html",
        strategy=strategy,
        run=run,
        target=target,
        scope_text=SCOPE_TEXT[target.scope],
        error=error,
        # The idempotency key of the exit this page would queue: a second submit is the same command.
        command_token=secrets.token_urlsafe(24),
        form=ConfirmForm(),
    )
    return page, code


def _token() -> str | None:
    token = (request.form.get("command_token") or "").strip()
    return token if token and len(token) <= COMMAND_TOKEN_MAX else None


def _token_used(token: str) -> bool:
    return db().scalar(select(EngineCommand.id).where(EngineCommand.token == token)) is not None


def queue_once(
    queue: Callable[[], EngineCommand],
    *,
    token: str,
    action: str,
    account_id: int | None,
    details: Callable[[EngineCommand], str],
    already: str,
) -> EngineCommand | None:
    """Queue one engine command under the page's ``token`` and log ``action``, in one commit. None when
    a second submit of the same form won the race (the token's unique index kept it to one command;
    ``already`` is flashed). An id ``queue`` cannot find for this user (LookupError) is a 404."""
    try:
        command = queue()
        log_activity(db(), action, user_id=me().id, account_id=account_id, details=details(command))
        db().commit()
    except LookupError:
        db().rollback()
        abort(404)
    except IntegrityError:
        db().rollback()
        if not _token_used(token):
            raise
        flash(already, "warning")
        return None
    return command


@bp.route("/<id:strategy_id>/run/<id:run_id>/exit", methods=["GET", "POST"], endpoint="exit")
def exit_run(strategy_id: int, run_id: int) -> ResponseReturnValue:
    """GET: confirm an exit of one execution, one account or the run (``scope`` and ids in the query).
    POST (CSRF, ``command_token``): queue one ``exit`` command and go back to the run page. The same
    token twice is one command ("already requested")."""
    strategy = _strategy(strategy_id)
    found = _run(strategy, run_id)
    target = _target(found)
    back = url_for("strategies.run", strategy_id=strategy.id, run_id=found.id)
    if request.method == "GET":
        return _confirm_page(strategy, found, target)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    token = _token()
    if token is None:
        return _confirm_page(
            strategy, found, target, error="This form is out of date; confirm the exit again.", code=400
        )
    if _token_used(token):
        flash("This exit is already requested.", "warning")
        return redirect(back, code=303)
    if target.exitable == 0:
        flash(f"Nothing to exit: {target.description} has no open position.", "warning")
        return redirect(back, code=303)
    # End the read transaction before writing (SQLite: a transaction that read cannot take the write lock
    # once another writer, e.g. a second submit, committed; a fresh one waits for it instead).
    db().commit()
    command = queue_once(
        lambda: request_exit(
            db(),
            user_id=me().id,
            scope=target.scope,  # type: ignore[arg-type]  # one of PAGE_SCOPES, checked above
            token=token,
            run_id=found.id,
            account_id=target.account_id,
            execution_id=target.execution.id if target.execution is not None else None,
            reason="manual",
        ),
        token=token,
        action="strategy_exit_requested",
        account_id=target.account_id,
        details=lambda c: (
            f"{strategy.name} (id {strategy.id}) run {found.id}: exit of {target.description} "
            f"(command {c.id})"
        ),
        already="This exit is already requested.",
    )
    if command is None:
        return redirect(back, code=303)
    flash(
        f"Exit of {target.description} queued ({target.exitable} open execution(s)). "
        "Statuses change here as the engine places the exit orders.",
        "success",
    )
    return redirect(back, code=303)


@bp.route("/exit-all", methods=["GET", "POST"])
def exit_all() -> ResponseReturnValue:
    """GET: what "exit all" acts on (open executions counted by strategy and account) and the confirm
    button. POST (CSRF, ``command_token``): queue one ``exit`` command of scope ``all``."""
    lines = run_data.open_executions(db(), me().id)
    if request.method == "GET":
        return _exit_all_page(lines)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    token = _token()
    if token is None:
        return _exit_all_page(lines, error="This form is out of date; confirm again.", code=400)
    if _token_used(token):
        flash("Exit all is already requested.", "warning")
        return _back_from_exit_all()
    if not lines:
        flash("Nothing to exit: no strategy has an open position.", "warning")
        return _back_from_exit_all()
    db().commit()
    count = sum(line.count for line in lines)
    strategies = len({x.strategy_id for x in lines})
    command = queue_once(
        lambda: request_exit(db(), user_id=me().id, scope="all", token=token, reason=EXIT_ALL_REASON),
        token=token,
        action="strategy_exit_all_requested",
        account_id=None,
        details=lambda c: (
            f"exit all: {count} open execution(s) in {strategies} strateg(ies) (command {c.id})"
        ),
        already="Exit all is already requested.",
    )
    if command is None:
        return _back_from_exit_all()
    flash(f"Exit all queued: {count} open execution(s). Follow each run on its page.", "success")
    return _back_from_exit_all()


def _exit_all_page(
    lines: list[run_data.OpenLine], *, error: str | None = None, code: int = 200
) -> tuple[str, int]:
    by_strategy: dict[int, list[run_data.OpenLine]] = {}
    for line in lines:
        by_strategy.setdefault(line.strategy_id, []).append(line)
    page = render_template(
        "strategies/exit_all.html",
        by_strategy=by_strategy,
        total=sum(line.count for line in lines),
        error=error,
        command_token=secrets.token_urlsafe(24),
        back=_back_path(),
    )
    return page, code


def _back_path() -> str:
    back = request.values.get("back") or ""
    return back if is_same_site_path(back) else url_for("dashboard.index")


def _back_from_exit_all() -> WerkzeugResponse:
    return redirect(_back_path(), code=303)


__all__ = ["exit_all", "exit_run", "run", "run_live"]
