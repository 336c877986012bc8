"""Trading calendar pages (PRODUCT §8): the exchanges' status now, holidays by year, special sessions,
and the holiday CSV export and import.

Any signed-in user can look; only administrators change anything (the calendar is installation-wide),
so every POST of a non-administrator is refused with 403. Each change is one transaction: the rows,
the calendar revision (running processes reload on it) and an activity-log row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from flask import Blueprint, Response, abort, flash, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select

from algomirror.broker.errors import BrokerError
from algomirror.broker.sync_facade import call_broker
from algomirror.db.calendar_edits import (
    CSV_MAX_BYTES,
    MARKETS,
    EditError,
    HolidayEntry,
    RowError,
    delete_holiday,
    delete_special_session,
    holiday_entries,
    holiday_group,
    holiday_years,
    holidays_csv,
    import_holidays,
    import_special_sessions,
    parse_holidays_csv,
    plan_openalgo_import,
    save_holiday,
    save_special_session,
)
from algomirror.db.calendar_store import load_calendar
from algomirror.db.models import TradingAccount
from algomirror.db.models.calendar import MarketHoliday, SpecialTradingSession
from algomirror.domain.calendar import TradingCalendar, expiry_dates
from algomirror.domain.contract_specs import ExpiryKind
from algomirror.domain.timeutil import to_ist
from algomirror.web.account_access import AccessRefused, broker_access
from algomirror.web.calendar_cache import web_calendar
from algomirror.web.calendar_forms import HolidayForm, SpecialSessionForm, parse_clock, parse_day
from algomirror.web.context import db, log_activity, market_now, me, redirect_to, release_db
from algomirror.web.forms import ConfirmForm

bp = Blueprint("calendar", __name__, url_prefix="/calendar")

#: The exchanges the status panel shows (BCD follows BSE's currency hours and is rarely traded).
STATUS_EXCHANGES: tuple[str, ...] = ("NSE", "BSE", "NFO", "BFO", "MCX", "CDS")
EXPIRY_UNDERLYINGS: tuple[str, ...] = ("NIFTY", "BANKNIFTY", "SENSEX")
EXPIRY_WEEKS = 4


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every calendar page needs a signed-in user; a change needs an administrator (403 otherwise)."""
    if request.method not in ("GET", "HEAD", "OPTIONS") and not me().is_admin:
        abort(403)


def _admin_only() -> None:
    """The forms themselves are for administrators only (a GET of one by anyone else is 403)."""
    if not me().is_admin:
        abort(403)


@dataclass(frozen=True)
class ExchangeStatus:
    """One row of the status panel (times aware IST)."""

    exchange: str
    open_now: bool
    trading_day: bool
    holiday: str | None
    next_open: datetime | None
    closes_at: datetime | None


@dataclass(frozen=True)
class ExpiryRow:
    underlying: str
    day: date
    kind: str
    shifted: bool


def _status(calendar: TradingCalendar, instant: datetime) -> list[ExchangeStatus]:
    today = to_ist(instant).date()
    found: list[ExchangeStatus] = []
    for exchange in STATUS_EXCHANGES:
        current = calendar.current_session(exchange, instant)
        try:
            next_open: datetime | None = to_ist(calendar.next_session_start(exchange, instant))
        except LookupError:
            next_open = None
        found.append(
            ExchangeStatus(
                exchange=exchange,
                open_now=current is not None,
                trading_day=calendar.is_trading_day(exchange, today),
                holiday=calendar.holiday_name(exchange, today),
                next_open=next_open,
                closes_at=to_ist(current[1]) if current is not None else None,
            )
        )
    return found


def _expiries(calendar: TradingCalendar, today: date) -> list[ExpiryRow]:
    """Expiries of the main indices in the next four weeks, with whether a holiday moved them."""
    end = today + timedelta(weeks=EXPIRY_WEEKS)
    plain = TradingCalendar(holidays=[])
    rows: list[ExpiryRow] = []
    for underlying in EXPIRY_UNDERLYINGS:
        seen: set[date] = set()
        kinds: tuple[ExpiryKind, ...] = ("monthly", "weekly")
        for kind in kinds:
            try:
                days = expiry_dates(underlying, kind, today, end, calendar)
                nominal = set(expiry_dates(underlying, kind, today, end + timedelta(days=7), plain))
            except (LookupError, ValueError):
                continue
            for day in days:
                if day in seen:
                    continue
                seen.add(day)
                rows.append(ExpiryRow(underlying, day, kind, day not in nominal))
    return sorted(rows, key=lambda r: (r.day, r.underlying))


def _missing_years(session_years: list[int], today: date) -> list[int]:
    """This year, and next year in December, when no holiday at all is loaded for it."""
    wanted = [today.year] + ([today.year + 1] if today.month == 12 else [])
    return [year for year in wanted if year not in session_years]


def _year_arg(default: int) -> int:
    year = request.args.get("year", type=int)
    return year if year is not None and 1990 <= year <= 2100 else default


@bp.route("/")
def index() -> ResponseReturnValue:
    """Status of each exchange now, holidays and special sessions of the chosen year."""
    return _index_page()


def _index_page(
    import_error: str | None = None,
    import_errors: list[RowError] | None = None,
    status: int = 200,
    *,
    openalgo_error: str | None = None,
    openalgo_notes: list[str] | None = None,
    year: int | None = None,
) -> ResponseReturnValue:
    session = db()
    instant = market_now()
    today = to_ist(instant).date()
    year = year if year is not None else _year_arg(today.year)
    calendar = web_calendar(force=True)
    years = holiday_years(session)
    specials = session.scalars(
        select(SpecialTradingSession)
        .where(
            SpecialTradingSession.date >= date(year, 1, 1), SpecialTradingSession.date <= date(year, 12, 31)
        )
        .order_by(SpecialTradingSession.date, SpecialTradingSession.market_open)
    ).all()
    return render_template(
        "calendar/index.html",
        now_ist=to_ist(instant),
        year=year,
        years=sorted(set(years) | {today.year, today.year + 1, year}),
        holidays=holiday_entries(session, year),
        specials=specials,
        status=_status(calendar, instant),
        expiries=_expiries(calendar, today),
        missing_years=_missing_years(years, today),
        is_admin=me().is_admin,
        import_form=ConfirmForm(formdata=None),
        import_error=import_error,
        import_errors=import_errors or [],
        import_accounts=_import_accounts() if me().is_admin else [],
        import_years=[today.year - 1, today.year, today.year + 1],
        openalgo_error=openalgo_error,
        openalgo_notes=openalgo_notes or [],
    ), status


# --- holidays ----------------------------------------------------------------------------------------------


def _describe(entry: HolidayEntry) -> str:
    return f"{entry.day.isoformat()} {entry.name} ({', '.join(entry.markets)})"


def _apply_errors(form: HolidayForm | SpecialSessionForm, exc: EditError) -> None:
    """Put the refusals of :mod:`calendar_edits` beside the fields they name."""
    for name, message in exc.errors.items():
        if name == "markets":
            form.markets_errors = [*form.markets_errors, message]
            continue
        field = getattr(form, "day" if name == "date" else name, None)
        if field is not None:
            field.errors = [*field.errors, message]


def _has_errors(form: HolidayForm | SpecialSessionForm) -> bool:
    return bool(form.errors) or bool(getattr(form, "markets_errors", []))


def _day(form: HolidayForm | SpecialSessionForm) -> date:
    day = parse_day(form.day.data)
    if day is None:  # validate() refused it already
        raise RuntimeError("unvalidated date")
    return day


def _holiday_or_404(holiday_id: int) -> list[MarketHoliday]:
    rows = holiday_group(db(), holiday_id)
    if not rows:
        abort(404)
    return rows


@bp.route("/holidays/new", methods=["GET", "POST"])
def holiday_new() -> ResponseReturnValue:
    """Add a holiday (one row per chosen market)."""
    _admin_only()
    form = HolidayForm()
    form.markets_errors = []
    if request.method == "GET":
        form.set_markets(["NSE", "BSE", "NFO", "BFO", "CDS", "BCD"])
    if form.validate_on_submit():
        session = db()
        try:
            entry = save_holiday(session, _day(form), form.name.data or "", form.chosen_markets())
        except EditError as exc:
            _apply_errors(form, exc)
        else:
            log_activity(session, "calendar_holiday_added", user_id=me().id, details=_describe(entry))
            session.commit()
            return redirect_to("calendar.index", f"Holiday {entry.name} added.", year=entry.day.year)
    return render_template("calendar/holiday_form.html", form=form, holiday_id=None), (
        400 if _has_errors(form) else 200
    )


@bp.route("/holidays/<id:holiday_id>/edit", methods=["GET", "POST"])
def holiday_edit(holiday_id: int) -> ResponseReturnValue:
    """Change a holiday's date, name or markets (its rows are replaced)."""
    _admin_only()
    rows = _holiday_or_404(holiday_id)
    form = HolidayForm()
    form.markets_errors = []
    if request.method == "GET":
        form.day.data = rows[0].date.isoformat()
        form.name.data = rows[0].name or ""
        form.set_markets([r.market for r in rows])
    if form.validate_on_submit():
        session = db()
        before = HolidayEntry(rows[0].date, rows[0].name or "", tuple(r.market for r in rows))
        try:
            entry = save_holiday(
                session, _day(form), form.name.data or "", form.chosen_markets(), replacing=rows
            )
        except EditError as exc:
            session.rollback()
            _apply_errors(form, exc)
        else:
            log_activity(
                session,
                "calendar_holiday_changed",
                user_id=me().id,
                details=f"{_describe(before)} -> {_describe(entry)}",
            )
            session.commit()
            return redirect_to("calendar.index", f"Holiday {entry.name} saved.", year=entry.day.year)
    return render_template("calendar/holiday_form.html", form=form, holiday_id=holiday_id), (
        400 if _has_errors(form) else 200
    )


@bp.route("/holidays/<id:holiday_id>/delete", methods=["GET", "POST"])
def holiday_delete(holiday_id: int) -> ResponseReturnValue:
    """Confirm (GET), then delete (POST) a holiday of all its markets."""
    _admin_only()
    rows = _holiday_or_404(holiday_id)
    entry = HolidayEntry(rows[0].date, rows[0].name or "", tuple(r.market for r in rows))
    form = ConfirmForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        session = db()
        delete_holiday(session, rows)
        log_activity(session, "calendar_holiday_deleted", user_id=me().id, details=_describe(entry))
        session.commit()
        return redirect_to("calendar.index", f"Holiday {entry.name} deleted.", year=entry.day.year)
    return render_template(
        "calendar/confirm_delete.html",
        form=form,
        what=f"the holiday {entry.name} on {entry.day:%a %d %b %Y} ({', '.join(entry.markets)})",
        action=request.path,
        year=entry.day.year,
    )


@bp.route("/holidays.csv")
def holidays_export() -> ResponseReturnValue:
    """The holidays as CSV (date,name,markets), of ``?year=`` or all years."""
    year = request.args.get("year", type=int)
    body = holidays_csv(entry for _id, entry in holiday_entries(db(), year))
    filename = f"holidays-{year}.csv" if year else "holidays.csv"
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.route("/holidays/import", methods=["POST"])
def holidays_import() -> ResponseReturnValue:
    """Import a holiday CSV: every row is checked first; one bad row and nothing is imported."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _index_page("Choose a CSV file.", status=400)
    entries, errors = parse_holidays_csv(upload.stream.read(CSV_MAX_BYTES + 1))
    if errors:
        return _index_page(None, errors, status=400)
    session = db()
    added, present = import_holidays(session, entries)
    log_activity(
        session,
        "calendar_holidays_imported",
        user_id=me().id,
        details=f"CSV {upload.filename[:100]}: {added} added, {present} already present",
    )
    session.commit()
    return redirect_to(
        "calendar.index",
        f"Imported the CSV: {added} holiday row(s) added, {present} already present.",
        year=entries[0].day.year,
    )


# --- import from OpenAlgo ---------------------------------------------------------------------------------


def _import_accounts() -> list[TradingAccount]:
    """The signed-in administrator's active accounts with an API key (the import asks one of them)."""
    return list(
        db().scalars(
            select(TradingAccount)
            .where(
                TradingAccount.user_id == me().id,
                TradingAccount.is_active.is_(True),
                TradingAccount.api_key_encrypted.is_not(None),
            )
            .order_by(TradingAccount.is_primary.desc(), TradingAccount.account_name, TradingAccount.id)
        )
    )


@bp.route("/holidays/import-openalgo", methods=["POST"])
def holidays_import_openalgo() -> ResponseReturnValue:
    """Ask one of the administrator's accounts for a year's holidays and special sessions
    (``market/holidays``) and add what is missing; what was left out is listed on the page."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    today = to_ist(market_now()).date()
    year = request.form.get("year", type=int)
    if year is None or not today.year - 1 <= year <= today.year + 1:
        return _index_page(openalgo_error="Choose a year: last, this or next.", status=400)
    account_id = request.form.get("account_id", type=int)
    account = next((a for a in _import_accounts() if a.id == account_id), None)
    if account is None:
        return _index_page(openalgo_error="Choose one of your active accounts.", status=400)
    try:
        access = broker_access(account)
    except AccessRefused as exc:
        return _index_page(openalgo_error=str(exc), status=400)
    release_db()  # no transaction is held across the broker call
    try:
        rows = call_broker(access.host_url, access.api_key, lambda client: client.market_holidays(year))
    except BrokerError as exc:
        return _index_page(
            openalgo_error=f"{access.name} could not list {year}'s holidays: {exc.message}", status=502
        )
    plan = plan_openalgo_import(rows, year)
    session = db()
    added, present = import_holidays(session, plan.holidays)
    specials_added, refused = import_special_sessions(session, load_calendar(session), plan.specials)
    left_out = [*plan.skipped, *refused]
    log_activity(
        session,
        "calendar_holidays_imported",
        user_id=me().id,
        details=(
            f"OpenAlgo {year} via {access.name}: {added} holiday row(s) added, {present} already present, "
            f"{specials_added} special session(s) added, {len(left_out)} left out"
        ),
    )
    session.commit()
    message = (
        f"Imported {year} from {access.name}: {added} holiday row(s) added, {present} already present, "
        f"{specials_added} special session(s) added."
    )
    if left_out:
        flash(message, "success")
        return _index_page(openalgo_notes=left_out, year=year)
    return redirect_to("calendar.index", message, year=year)


# --- special sessions --------------------------------------------------------------------------------------


def _clock(text: str | None) -> time:
    value = parse_clock(text)
    if value is None:  # validate() refused it already
        raise RuntimeError("unvalidated time")
    return value


def _special_or_404(special_id: int) -> SpecialTradingSession:
    row = db().get(SpecialTradingSession, special_id)
    if row is None:
        abort(404)
    return row


def _describe_special(row: SpecialTradingSession) -> str:
    markets = ", ".join(str(m) for m in (row.markets or []))
    return f"{row.date.isoformat()} {row.name} {row.market_open:%H:%M}-{row.market_close:%H:%M} ({markets})"


def _special_form_page(form: SpecialSessionForm, special_id: int | None) -> ResponseReturnValue:
    return render_template("calendar/special_form.html", form=form, special_id=special_id), (
        400 if _has_errors(form) else 200
    )


def _save_special(
    form: SpecialSessionForm, existing: SpecialTradingSession | None
) -> ResponseReturnValue | None:
    """Save the form (a redirect), or put the refusals beside its fields and return None."""
    session = db()
    before = _describe_special(existing) if existing is not None else None
    try:
        row = save_special_session(
            session,
            load_calendar(session),
            day=_day(form),
            name=form.name.data or "",
            market_open=_clock(form.market_open.data),
            market_close=_clock(form.market_close.data),
            markets=form.chosen_markets(),
            existing=existing,
        )
    except EditError as exc:
        session.rollback()
        _apply_errors(form, exc)
        return None
    details = _describe_special(row) if before is None else f"{before} -> {_describe_special(row)}"
    action = "calendar_special_added" if before is None else "calendar_special_changed"
    log_activity(session, action, user_id=me().id, details=details)
    session.commit()
    return redirect_to("calendar.index", f"Special session {row.name} saved.", year=row.date.year)


@bp.route("/specials/new", methods=["GET", "POST"])
def special_new() -> ResponseReturnValue:
    """Add a special session."""
    _admin_only()
    form = SpecialSessionForm()
    form.markets_errors = []
    if request.method == "GET":
        form.set_markets(["NSE", "BSE", "NFO", "BFO"])
    if form.validate_on_submit():
        done = _save_special(form, None)
        if done is not None:
            return done
    return _special_form_page(form, None)


@bp.route("/specials/<id:special_id>/edit", methods=["GET", "POST"])
def special_edit(special_id: int) -> ResponseReturnValue:
    """Change a special session."""
    _admin_only()
    row = _special_or_404(special_id)
    form = SpecialSessionForm()
    form.markets_errors = []
    if request.method == "GET":
        form.day.data = row.date.isoformat()
        form.name.data = row.name or ""
        form.market_open.data = f"{row.market_open:%H:%M}"
        form.market_close.data = f"{row.market_close:%H:%M}"
        form.set_markets([str(m) for m in (row.markets or [])])
    if form.validate_on_submit():
        done = _save_special(form, row)
        if done is not None:
            return done
    return _special_form_page(form, special_id)


@bp.route("/specials/<id:special_id>/delete", methods=["GET", "POST"])
def special_delete(special_id: int) -> ResponseReturnValue:
    """Confirm (GET), then delete (POST) a special session."""
    _admin_only()
    row = _special_or_404(special_id)
    form = ConfirmForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        session = db()
        details = _describe_special(row)
        year = row.date.year
        delete_special_session(session, row)
        log_activity(session, "calendar_special_deleted", user_id=me().id, details=details)
        session.commit()
        return redirect_to("calendar.index", "Special session deleted.", year=year)
    return render_template(
        "calendar/confirm_delete.html",
        form=form,
        what=(
            f"the special session {row.name} on {row.date:%a %d %b %Y} "
            f"({row.market_open:%H:%M}–{row.market_close:%H:%M} IST)"
        ),
        action=request.path,
        year=row.date.year,
    )


__all__ = ["MARKETS", "bp"]

# The hours pages add their routes to ``bp`` (imported last: they need it defined).
from algomirror.web import calendar_hours as _calendar_hours  # noqa: E402,F401
