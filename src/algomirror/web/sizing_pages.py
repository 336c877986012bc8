"""Sizing settings (PRODUCT §9.1, §9.2, §10): the user's instrument settings, margin table and grades.

One page with a form per row. Every POST is CSRF-checked, touches only the signed-in user's rows (another
user's id is a 404), is validated by :mod:`algomirror.db.sizing_edits` (a bad field re-renders the page
with the error beside it and changes nothing) and is written to the activity log with what changed. The
engine reads these rows at its next command, so a saved change applies without a restart.
"""

from __future__ import annotations

from datetime import date
from typing import Any, TypeVar

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db import sizing_edits as edits
from algomirror.db.base import Base
from algomirror.db.instrument_settings import revisions_in_force
from algomirror.db.models.enums import GRADE_SOURCES, RISK_LEVELS
from algomirror.db.models.sizing import (
    MarginRequirement,
    TradeQuality,
    TradingSetting,
    TradingSettingRevision,
)
from algomirror.domain.timeutil import to_ist
from algomirror.web.context import db, log_activity, market_now, me, redirect_to
from algomirror.web.forms import require_confirmation

bp = Blueprint("sizing", __name__, url_prefix="/sizing")

Row = TypeVar("Row", bound=Base)


def _owned(session: Session, model: type[Row], row_id: int) -> Row:
    row = session.get(model, row_id)
    if row is None or getattr(row, "user_id", None) != me().id:
        abort(404)
    return row


def _page(failed: tuple[str, int | None] | None = None, errors: dict[str, str] | None = None) -> str:
    session = db()
    uid = me().id
    today = _today()
    settings = session.scalars(
        select(TradingSetting).where(TradingSetting.user_id == uid).order_by(TradingSetting.symbol)
    ).all()
    context: dict[str, Any] = {
        "settings": settings,
        # The revision whose figures replace each row's today: the table shows what the engine uses.
        "in_force": revisions_in_force(session, [s.id for s in settings], today),
        "margins": session.scalars(
            select(MarginRequirement)
            .where(MarginRequirement.user_id == uid)
            .order_by(MarginRequirement.instrument)
        ).all(),
        "grades": session.scalars(
            select(TradeQuality).where(TradeQuality.user_id == uid).order_by(TradeQuality.quality_grade)
        ).all(),
        "revisions": session.execute(
            select(TradingSettingRevision, TradingSetting.symbol)
            .join(TradingSetting, TradingSetting.id == TradingSettingRevision.setting_id)
            .where(TradingSetting.user_id == uid)
            .order_by(TradingSetting.symbol, TradingSettingRevision.effective_from)
        ).all(),
        "today": today,
        "margin_fields": edits.MARGIN_FIELDS,
        "risk_levels": RISK_LEVELS,
        "sources": GRADE_SOURCES,
        "slice_of": edits.slice_of,
        "failed": failed,
        "errors": errors or {},
        "submitted": request.form if failed else {},
    }
    return render_template("sizing/index.html", **context)


def _today() -> date:
    """Today's IST date on the market clock: the day the engine's next preview sizes by."""
    return to_ist(market_now()).date()


def _refused(kind: str, row_id: int | None, exc: edits.FieldErrors) -> ResponseReturnValue:
    db().rollback()
    return _page((kind, row_id), exc.errors), 400


def _saved(action: str, what: str, changes: list[str], anchor: str) -> ResponseReturnValue:
    session = db()
    if changes:
        log_activity(session, action, user_id=me().id, details=f"{what}: {'; '.join(changes)}")
    session.commit()
    message = f"{what} saved." if changes else f"{what}: nothing changed."
    return redirect_to("sizing.index", message, _anchor=anchor)


@bp.route("/", methods=["GET"])
@login_required
def index() -> ResponseReturnValue:
    """Instrument settings, margin table and grades of the signed-in user."""
    return _page()


@bp.route("/instruments/<id:row_id>", methods=["POST"])
@login_required
def save_setting(row_id: int) -> ResponseReturnValue:
    """Save one instrument's lot size, next-month lot size, freeze quantity and active flag."""
    require_confirmation()
    session = db()
    row = _owned(session, TradingSetting, row_id)
    in_force = revisions_in_force(session, [row.id], _today()).get(row.id)
    try:
        changes = edits.update_trading_setting(row, request.form, in_force=in_force)
    except edits.FieldErrors as exc:
        return _refused("setting", row_id, exc)
    return _saved("sizing_setting_changed", f"Instrument {row.symbol}", changes, "instruments")


@bp.route("/instruments/reset", methods=["POST"])
@login_required
def reset_settings() -> ResponseReturnValue:
    """Put NIFTY, BANKNIFTY and SENSEX back to the default lot sizes and freeze limits."""
    require_confirmation()
    changes = edits.reset_trading_settings(db(), me().id)
    return _saved("sizing_settings_reset", "Instrument settings reset to defaults", changes, "instruments")


@bp.route("/instruments/<id:row_id>/revisions", methods=["POST"])
@login_required
def add_revision(row_id: int) -> ResponseReturnValue:
    """Schedule an exchange revision of one instrument from an effective date."""
    require_confirmation()
    row = _owned(db(), TradingSetting, row_id)
    try:
        revision = edits.add_revision(db(), row, request.form)
    except edits.FieldErrors as exc:
        return _refused("revision", row_id, exc)
    what = f"Instrument {row.symbol} from {revision.effective_from.isoformat()}"
    change = f"lot {revision.lot_size}, freeze {revision.freeze_quantity}"
    return _saved("sizing_revision_added", what, [change], "revisions")


@bp.route("/revisions/<id:revision_id>/delete", methods=["POST"])
@login_required
def delete_revision(revision_id: int) -> ResponseReturnValue:
    """Delete a scheduled revision (its button sits behind a disclosure: the confirmation step)."""
    require_confirmation()
    session = db()
    revision = session.get(TradingSettingRevision, revision_id)
    setting = session.get(TradingSetting, revision.setting_id) if revision else None
    if revision is None or setting is None or setting.user_id != me().id:
        abort(404)
    what = f"Instrument {setting.symbol} from {revision.effective_from.isoformat()}"
    session.delete(revision)
    return _saved("sizing_revision_deleted", what, ["revision deleted"], "revisions")


@bp.route("/margins/<id:row_id>", methods=["POST"])
@login_required
def save_margin(row_id: int) -> ResponseReturnValue:
    """Save one instrument's margin figures."""
    require_confirmation()
    row = _owned(db(), MarginRequirement, row_id)
    try:
        changes = edits.update_margin_row(row, request.form)
    except edits.FieldErrors as exc:
        return _refused("margin", row_id, exc)
    return _saved("sizing_margin_changed", f"Margins of {row.instrument}", changes, "margins")


@bp.route("/margins/new", methods=["POST"])
@login_required
def add_margin() -> ResponseReturnValue:
    """Add a margin row for another instrument."""
    require_confirmation()
    try:
        row = edits.add_margin_row(db(), me().id, request.form)
    except edits.FieldErrors as exc:
        return _refused("margin", None, exc)
    return _saved("sizing_margin_added", f"Margins of {row.instrument}", ["added"], "margins")


@bp.route("/margins/reset", methods=["POST"])
@login_required
def reset_margins() -> ResponseReturnValue:
    """Put the default instruments' margin rows back to the defaults."""
    require_confirmation()
    count = edits.reset_margin_rows(db(), me().id)
    return _saved("sizing_margins_reset", "Margin table", [f"{count} rows reset to defaults"], "margins")


@bp.route("/grades/<id:row_id>", methods=["POST"])
@login_required
def save_grade(row_id: int) -> ResponseReturnValue:
    """Save one grade's margin %, risk level, source, description and active flag."""
    require_confirmation()
    row = _owned(db(), TradeQuality, row_id)
    try:
        changes = edits.update_grade(row, request.form)
    except edits.FieldErrors as exc:
        return _refused("grade", row_id, exc)
    return _saved("sizing_grade_changed", f"Grade {row.quality_grade}", changes, "grades")


@bp.route("/grades/new", methods=["POST"])
@login_required
def add_grade() -> ResponseReturnValue:
    """Add a custom grade."""
    require_confirmation()
    try:
        row = edits.add_grade(db(), me().id, request.form)
    except edits.FieldErrors as exc:
        return _refused("grade", None, exc)
    return _saved("sizing_grade_added", f"Grade {row.quality_grade}", ["added"], "grades")


@bp.route("/grades/<id:row_id>/delete", methods=["GET", "POST"])
@login_required
def delete_grade(row_id: int) -> ResponseReturnValue:
    """GET: the confirmation page; POST: delete a custom grade no strategy uses."""
    session = db()
    row = _owned(session, TradeQuality, row_id)
    if request.method == "GET":
        users = edits.grade_users(session, me().id, row.quality_grade)
        return render_template("sizing/delete_grade.html", grade=row, users=users)
    require_confirmation()
    name = row.quality_grade
    try:
        edits.delete_grade(session, row)
    except edits.GradeInUse as exc:
        session.rollback()
        return redirect_to("sizing.index", str(exc), "error", _anchor="grades")
    return _saved("sizing_grade_deleted", f"Grade {name}", ["deleted"], "grades")
