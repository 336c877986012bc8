"""Regular trading hours pages (PRODUCT §8): the hours templates (equity, commodity, currency) with their
markets, pre-open windows and seven weekday rows; administrators edit them, everyone can look.

Routes are on the calendar blueprint (``/calendar/hours``), so the same sign-in and administrator rules
apply (:mod:`algomirror.web.calendar_pages`). A save is one transaction: the template, its days, the
calendar revision (running processes reload on it) and an activity row.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time

from flask import abort, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from algomirror.db.calendar_edits import MARKETS
from algomirror.db.hours_edits import WEEKDAYS, DayHours, EditError, TemplateHours, describe, save_hours
from algomirror.db.models.calendar import TradingHoursTemplate
from algomirror.web.calendar_forms import parse_clock
from algomirror.web.calendar_pages import bp
from algomirror.web.context import db, log_activity, me, redirect_to
from algomirror.web.forms import require_confirmation

TIME_FIELDS = ("market_open", "market_close", "pre_start", "pre_end")


def _templates() -> list[TradingHoursTemplate]:
    return list(
        db().scalars(
            select(TradingHoursTemplate)
            .options(selectinload(TradingHoursTemplate.sessions))
            .order_by(TradingHoursTemplate.id)
        )
    )


def _template_or_404(template_id: int) -> TradingHoursTemplate:
    template = db().get(TradingHoursTemplate, template_id)
    if template is None:
        abort(404)
    return template


def _hhmm(value: time | None) -> str:
    return f"{value:%H:%M}" if value is not None else ""


def _values_of(template: TradingHoursTemplate) -> dict[str, str]:
    """The form's values for ``template`` as stored (what the edit page shows first)."""
    values = {
        "market_open": _hhmm(template.market_open),
        "market_close": _hhmm(template.market_close),
        "pre_start": _hhmm(template.pre_open_start),
        "pre_end": _hhmm(template.pre_open_end),
        "active": "y" if template.is_active else "",
    }
    for market in template.markets or []:
        values[f"market_{str(market).upper()}"] = "y"
    for row in template.sessions:
        n = row.day_of_week
        values[f"d{n}_trading"] = "y" if row.is_trading_day else ""
        values[f"d{n}_market_open"] = _hhmm(row.market_open)
        values[f"d{n}_market_close"] = _hhmm(row.market_close)
        values[f"d{n}_pre_start"] = _hhmm(row.pre_market_start)
        values[f"d{n}_pre_end"] = _hhmm(row.pre_market_end)
    return values


def _parse(form: Mapping[str, str]) -> tuple[TemplateHours, list[DayHours], dict[str, str]]:
    """The posted form as hours and days, with an error for each time that is not HH:MM."""
    errors: dict[str, str] = {}

    def clock(name: str) -> time | None:
        text = (form.get(name) or "").strip()
        if not text:
            return None
        value = parse_clock(text)
        if value is None:
            errors[name] = f"{text[:20]!r} is not a time like 09:15."
        return value

    opens, closes = clock("market_open"), clock("market_close")
    hours = TemplateHours(
        market_open=opens or time(0),
        market_close=closes or time(0),
        pre_start=clock("pre_start"),
        pre_end=clock("pre_end"),
        markets=tuple(m for m in MARKETS if form.get(f"market_{m}")),
        active=bool(form.get("active")),
    )
    if opens is None and "market_open" not in errors:
        errors["market_open"] = "Enter the open (HH:MM)."
    if closes is None and "market_close" not in errors:
        errors["market_close"] = "Enter the close (HH:MM)."
    days = [
        DayHours(
            weekday=n,
            trading=bool(form.get(f"d{n}_trading")),
            market_open=clock(f"d{n}_market_open"),
            market_close=clock(f"d{n}_market_close"),
            pre_start=clock(f"d{n}_pre_start"),
            pre_end=clock(f"d{n}_pre_end"),
        )
        for n in range(7)
    ]
    return hours, days, errors


@bp.route("/hours")
def hours() -> ResponseReturnValue:
    """Every hours template with its weekday rows."""
    return render_template(
        "calendar/hours.html", templates=_templates(), weekdays=WEEKDAYS, is_admin=me().is_admin
    )


@bp.route("/hours/<id:template_id>", methods=["GET", "POST"])
def hours_edit(template_id: int) -> ResponseReturnValue:
    """Edit a template's hours, pre-open, markets and its seven days (administrators)."""
    if not me().is_admin:
        abort(403)
    template = _template_or_404(template_id)
    if request.method == "GET":
        return _form(template, _values_of(template), {})
    require_confirmation()
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    hours_, days, errors = _parse(request.form)
    if not errors:
        session = db()
        before = describe(template)
        try:
            save_hours(session, template, hours_, days)
        except EditError as exc:
            session.rollback()
            errors = exc.errors
        else:
            session.refresh(template)
            log_activity(
                session,
                "calendar_hours_changed",
                user_id=me().id,
                details=f"{before} -> {describe(template)}",
            )
            session.commit()
            return redirect_to("calendar.hours", f"Hours of {template.name} saved.")
    return _form(_template_or_404(template_id), values, errors, status=400)


def _form(
    template: TradingHoursTemplate, values: Mapping[str, str], errors: Mapping[str, str], *, status: int = 200
) -> ResponseReturnValue:
    return render_template(
        "calendar/hours_form.html",
        template=template,
        values=values,
        errors=errors,
        weekdays=WEEKDAYS,
        markets=MARKETS,
        time_fields=TIME_FIELDS,
    ), status


__all__ = ["hours", "hours_edit"]
