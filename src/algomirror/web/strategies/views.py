"""Strategy builder pages: list, create (blank or from a template), edit, clone, (de)activate, delete.

Only configuration is written here: nothing is executed, previewed or scheduled (the engine does that).
Every strategy is looked up with the signed-in user's id, so another user's strategy is a 404.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError

from algomirror.db.models import Strategy, StrategyLeg
from algomirror.db.retirement import (
    Retired,
    StillTradingError,
    leg_has_history,
    retire_strategy,
    strategy_blockers,
    strategy_has_history,
)
from algomirror.domain.timeutil import to_ist
from algomirror.web.context import db, log_activity, market_now, me, now, redirect_to
from algomirror.web.dashboard import require_sign_in, stale_after
from algomirror.web.forms import ConfirmForm, require_confirmation
from algomirror.web.ids import parse_id
from algomirror.web.strategies import repo, run_data
from algomirror.web.strategies.forms import CheckContext, LegForm, StrategyForm, add_error, parse_multiplier
from algomirror.web.strategies.ready import READY_TEMPLATES

bp = Blueprint("strategies", __name__, url_prefix="/strategies")

NAME_TAKEN = "You already have a strategy with this name."


require_sign_in(bp)


def _own(strategy_id: int) -> Strategy:
    strategy = repo.get_strategy(db(), me().id, strategy_id)
    if strategy is None:
        abort(404)
    return strategy


@bp.route("/")
def index() -> ResponseReturnValue:
    """The user's strategies and the template gallery (ready templates plus the user's own)."""
    session = db()
    at = market_now()
    strategies = repo.list_strategies(session, me().id)
    return render_template(
        "strategies/index.html",
        strategies=strategies,
        run_states=run_data.strategy_states(
            session, me().id, [s.id for s in strategies], at, stale_after(at)
        ),
        accounts=repo.active_accounts(session, me().id),
        user_templates=repo.templates(session, me().id),
        ready=READY_TEMPLATES.values(),
        form=ConfirmForm(),
        today=to_ist(at).date(),
    )


def _form(
    strategy: Strategy | None, data: dict[str, Any] | None = None, legs: list[dict[str, Any]] | None = None
) -> tuple[StrategyForm, repo.Profiles]:
    profiles = repo.risk_profiles(db(), me().id, strategy.risk_profile if strategy is not None else None)
    if data is None and strategy is not None:
        data = repo.strategy_data(strategy)
        legs = [repo.leg_data(leg) for leg in strategy.legs]
    return StrategyForm(profiles=profiles.choices, data=data, legs=legs or ()), profiles


def _render(
    form: StrategyForm,
    strategy: Strategy | None,
    selected: list[int],
    status: int = 200,
    *,
    factors: dict[int, str] | None = None,
    factor_errors: dict[int, str] | None = None,
    **extra: Any,
) -> ResponseReturnValue:
    accounts = repo.active_accounts(db(), me().id)
    if factors is None:
        # A re-rendered POST shows what was typed, valid or not.
        factors = {i: request.form.get(f"mult-{i}", "") for i in accounts} if request.method == "POST" else {}
    # A stored account that is no longer active (or archived) is not offered: saving drops it, and the
    # page says so rather than letting it vanish unnoticed.
    return render_template(
        "strategies/form.html",
        form=form,
        strategy=strategy,
        accounts=accounts,
        selected=set(selected),
        dropped=len([i for i in selected if i not in accounts]),
        factors=factors,
        factor_errors=factor_errors or {},
        **extra,
    ), status


def _prefill() -> tuple[dict[str, Any], list[dict[str, Any]], list[int], str | Strategy | None]:
    """The create form's prefill from ``?template=``: a ready template's key or the id of one of the
    user's own templates (404 when it is neither)."""
    key = request.args.get("template")
    data = repo.new_strategy_data()
    if not key:
        return data, [], [], None
    ready = READY_TEMPLATES.get(key)
    if ready is not None:
        data["name"] = ready.name
        data["description"] = ready.description
        return data, repo.template_legs(ready), [], ready.name
    template_id = parse_id(key)
    source = repo.get_strategy(db(), me().id, template_id) if template_id is not None else None
    if source is None or not source.is_template:
        abort(404)
    data = repo.strategy_data(source)
    data["name"] = repo.copy_name(db(), me().id, source.name)
    data["is_template"] = False
    legs = [repo.leg_data(leg) | {"leg_id": ""} for leg in source.legs]
    usable = repo.active_accounts(db(), me().id)
    return data, legs, [i for i in repo.selected_ids(source) if i in usable], source


@bp.route("/new", methods=["GET", "POST"])
def create() -> ResponseReturnValue:
    """A new strategy; ``?template=`` prefills it. An invalid form comes back with every error (400)."""
    if request.method == "GET":
        data, legs, selected, source = _prefill()
        form, _ = _form(None, data, legs)
        if isinstance(source, Strategy):
            return _render(form, None, selected, factors=repo.multipliers(source), template_name=source.name)
        return _render(form, None, selected, template_name=source)
    return _save(None)


@bp.route("/<id:strategy_id>/edit", methods=["GET", "POST"])
def edit(strategy_id: int) -> ResponseReturnValue:
    """Edit a strategy and its legs (legs in an open run cannot change; legs with history cannot go)."""
    strategy = _own(strategy_id)
    if request.method == "GET":
        form, _ = _form(strategy)
        return _render(form, strategy, repo.selected_ids(strategy), factors=repo.multipliers(strategy))
    return _save(strategy)


def _strategy_values(form: StrategyForm) -> dict[str, Any]:
    def off_if_zero(value: Decimal | None) -> Decimal | None:
        return value if value is not None and value > 0 else None

    period = form.supertrend_period.value
    return {
        "name": form.name.data or "",
        "description": form.description.data or None,
        "market_condition": form.market_condition.data,
        "risk_profile": form.risk_profile.data,
        "allocation_type": form.allocation_type.data,
        "product_order_type": form.product_order_type.data,
        "entry_time": form.entry_time.value,
        "exit_time": form.exit_time.value,
        "square_off_time": form.square_off_time.value,
        "max_loss": off_if_zero(form.max_loss.value),
        "max_profit": off_if_zero(form.max_profit.value),
        "trailing_sl": off_if_zero(form.trailing_sl.value),
        "trailing_sl_type": form.trailing_sl_type.data,
        "auto_exit_on_max_loss": bool(form.auto_exit_on_max_loss.data),
        "auto_exit_on_max_profit": bool(form.auto_exit_on_max_profit.data),
        "risk_monitoring_enabled": bool(form.risk_monitoring_enabled.data),
        "risk_scope": form.risk_scope.data,
        "on_leg_failure": form.on_leg_failure.data,
        "supertrend_exit_enabled": bool(form.supertrend_exit_enabled.data),
        "supertrend_exit_type": form.supertrend_exit_type.data or None,
        "supertrend_period": int(period) if period is not None else 7,
        "supertrend_multiplier": form.supertrend_multiplier.value or Decimal("3.0"),
        "supertrend_timeframe": form.supertrend_timeframe.data,
        "is_template": bool(form.is_template.data),
    }


def _apply_legs(form: StrategyForm, strategy: Strategy) -> bool:
    """Write the used rows into ``strategy.legs``: a row with a leg id updates that leg, one without adds a
    leg, a stored leg no row names is removed. False (with the errors placed) when a leg in the open run
    would change or a leg with executions would be removed."""
    rows: list[LegForm] = [row for row in form.leg_rows if not row.is_blank()]
    by_id = {leg.id: leg for leg in strategy.legs if leg.id is not None}
    kept: set[int] = set()
    ok = True
    legs: list[StrategyLeg] = []
    for number, row in enumerate(rows, start=1):
        values = row.values()
        raw_id = row.leg_id.data or ""
        leg_id = int(raw_id) if raw_id.isdigit() else None
        leg = by_id.get(leg_id) if leg_id is not None else None
        if leg is None:
            leg = StrategyLeg()
        else:
            kept.add(leg.id)
            changed = any(getattr(leg, name) != value for name, value in values.items())
            if leg.is_executed and (changed or leg.leg_number != number):
                add_error(row.instrument, "This leg is in the open run and cannot change.")
                ok = False
                continue
        for name, value in values.items():
            setattr(leg, name, value)
        leg.leg_number = number
        legs.append(leg)
    gone = [leg for leg_id, leg in by_id.items() if leg_id not in kept]
    blocked = [leg for leg in gone if leg.is_executed or leg_has_history(db(), leg)]
    if blocked:
        numbers = ", ".join(str(leg.leg_number) for leg in blocked)
        form.legs_error = (
            f"Leg {numbers} has executions and cannot be removed: archive the strategy (Delete) and clone it."
        )
        ok = False
    if ok:
        strategy.legs[:] = legs
    return ok


def _save(strategy: Strategy | None) -> ResponseReturnValue:
    session = db()
    user_id = me().id
    form, profiles = _form(strategy)
    selected_raw = request.form.getlist("accounts")
    context = CheckContext(
        accounts=repo.active_accounts(session, user_id),
        cash_profiles=profiles.cash,
        leg_ids=frozenset(leg.id for leg in strategy.legs) if strategy is not None else frozenset(),
        today=to_ist(market_now()).date(),
    )
    valid = form.validate_all(selected_raw, context)
    selected = getattr(form, "account_ids", [])
    factors: dict[int, Decimal] = {}
    factor_errors: dict[int, str] = {}
    for account_id in selected:
        value, error = parse_multiplier(request.form.get(f"mult-{account_id}", ""))
        if error is not None:
            factor_errors[account_id] = error
            valid = False
        elif value is not None:
            factors[account_id] = value
    exclude = strategy.id if strategy is not None else None
    if (
        form.name.data
        and not form.name.errors
        and repo.name_taken(session, user_id, form.name.data, exclude_id=exclude)
    ):
        add_error(form.name, NAME_TAKEN)
        valid = False
    target = strategy if strategy is not None else Strategy(user_id=user_id, is_active=True)
    if valid:
        values = _strategy_values(form)
        changes = [name for name, value in values.items() if getattr(target, name) != value]
        for name, value in values.items():
            setattr(target, name, value)
        target.selected_accounts = repo.selection(selected, factors)
        if strategy is None:
            session.add(target)
        valid = _apply_legs(form, target)
    if not valid:
        session.rollback()
        shown = _own(strategy.id) if strategy is not None else None
        return _render(form, shown, selected, 400, factor_errors=factor_errors)
    try:
        session.flush()
        log_activity(
            session,
            "strategy_created" if strategy is None else "strategy_updated",
            user_id=user_id,
            details=f"{target.name} (id {target.id}), {len(target.legs)} leg(s)"
            + ("" if strategy is None else f"; changed: {', '.join(changes) or 'legs only'}"),
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        add_error(form.name, NAME_TAKEN)
        shown = _own(strategy.id) if strategy is not None else None
        return _render(form, shown, selected, 400, factor_errors=factor_errors)
    verb = "created" if strategy is None else "updated"
    return redirect_to("strategies.index", f"Strategy “{target.name}” {verb}.")


@bp.route("/<id:strategy_id>/clone", methods=["POST"])
def clone(strategy_id: int) -> ResponseReturnValue:
    """Copy the strategy with its legs as "<name> (copy)", inactive."""
    require_confirmation()
    source = _own(strategy_id)
    session = db()
    user_id = me().id
    name = repo.copy_name(session, user_id, source.name)
    try:
        copy = repo.clone(session, source, name, repo.active_accounts(session, user_id))
        log_activity(
            session,
            "strategy_cloned",
            user_id=user_id,
            details=f"{copy.name} (id {copy.id}) from {source.name} (id {source.id})",
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        return redirect_to(
            "strategies.index", "Another copy was made at the same moment; try again.", "error"
        )
    return redirect_to("strategies.index", f"“{copy.name}” created, inactive: review it, then activate it.")


def _set_active(strategy_id: int, active: bool) -> ResponseReturnValue:
    require_confirmation()
    strategy = _own(strategy_id)
    session = db()
    strategy.is_active = active
    log_activity(
        session,
        "strategy_activated" if active else "strategy_deactivated",
        user_id=me().id,
        details=f"{strategy.name} (id {strategy.id})",
    )
    session.commit()
    if active:
        return redirect_to("strategies.index", f"“{strategy.name}” is active.")
    return redirect_to(
        "strategies.index",
        f"“{strategy.name}” is inactive: no new entries or schedules; open positions stay monitored.",
    )


@bp.route("/<id:strategy_id>/activate", methods=["POST"])
def activate(strategy_id: int) -> ResponseReturnValue:
    """Allow entries and schedules again."""
    return _set_active(strategy_id, True)


@bp.route("/<id:strategy_id>/deactivate", methods=["POST"])
def deactivate(strategy_id: int) -> ResponseReturnValue:
    """Stop entries and schedules (the monitoring of open positions goes on)."""
    return _set_active(strategy_id, False)


@bp.route("/<id:strategy_id>/delete", methods=["GET", "POST"])
def delete(strategy_id: int) -> ResponseReturnValue:
    """GET: what deleting would do (refused while a run is live, archived when it has history, deleted
    otherwise). POST (confirmed): do it through :func:`~algomirror.db.retirement.retire_strategy`."""
    strategy = _own(strategy_id)
    session = db()
    form = ConfirmForm()
    if not form.validate_on_submit():
        if form.is_submitted():
            abort(400)
        return render_template(
            "strategies/delete.html",
            strategy=strategy,
            form=form,
            blockers=strategy_blockers(session, strategy.id),
            has_history=strategy_has_history(session, strategy.id),
        )
    name = strategy.name
    # A fresh transaction whose first statement takes the write lock (see retirement._lock).
    session.commit()
    try:
        outcome = retire_strategy(session, strategy, now=now())
    except StillTradingError as exc:
        session.rollback()
        return redirect_to("strategies.index", str(exc), "error")
    except IntegrityError:
        session.rollback()
        return redirect_to(
            "strategies.index", f"“{name}” started a run meanwhile and was not deleted; try again.", "error"
        )
    archived = outcome is Retired.ARCHIVED
    log_activity(
        session,
        "strategy_archived" if archived else "strategy_deleted",
        user_id=me().id,
        details=f"{name} (id {strategy_id})",
    )
    session.commit()
    if archived:
        return redirect_to(
            "strategies.index", f"Strategy “{name}” archived: hidden, its runs and journal kept."
        )
    return redirect_to("strategies.index", f"Strategy “{name}” deleted.")
