"""Dashboard: ``dashboard.index`` at "/" and its live fragment ``dashboard.live``.

The page reads only our database (the engine's sync fills it); the fragment is polled by htmx every
few seconds, so the numbers move without a reload. Three queries per render, whatever the number of
accounts, plus one for the user's open engine alerts (reconciliation gaps, failed exits, ...), each with
an Acknowledge button (``dashboard.acknowledge_alert``, POST + CSRF; another user's alert is a 404).
The header shows the open-alert count on every page (``open_alert_count``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from algomirror.db.models import EngineAlert, TradingAccount
from algomirror.domain.calendar import TradingCalendar
from algomirror.domain.timeutil import clock_speed, format_ist, to_ist
from algomirror.engine import alerts as engine_alerts
from algomirror.web import queries, viewfmt
from algomirror.web.auth import service
from algomirror.web.calendar_cache import web_calendar
from algomirror.web.context import db, is_same_site_path, market_now, me, now, redirect_to, state
from algomirror.web.forms import require_confirmation

bp = Blueprint("dashboard", __name__)

MARKET_EXCHANGE = "NSE"
POLL_SECONDS = 3


@dataclass(frozen=True)
class MarketStatus:
    """Whether NSE is in a session now, and the line the header shows about it."""

    is_open: bool
    text: str


def market_status(at: datetime, calendar: TradingCalendar | None = None) -> MarketStatus:
    """ "Market open · closes 15:30 IST" or "Market closed · next session Mon 24 Nov 09:15 IST" (NSE)."""
    cal = calendar or web_calendar()
    current = cal.current_session(MARKET_EXCHANGE, at)
    if current is not None:
        return MarketStatus(True, f"Market open · closes {to_ist(current[1]).strftime('%H:%M')} IST")
    try:
        nxt = cal.next_session_start(MARKET_EXCHANGE, at)
    except LookupError:
        return MarketStatus(False, "Market closed · no session scheduled")
    return MarketStatus(False, f"Market closed · next session {format_ist(nxt, '%a %d %b %H:%M')}")


def stale_after(at: datetime, is_open: bool | None = None) -> timedelta:
    """Two sync intervals (market-hours or closed interval from settings) on the market clock: older
    data is flagged. The intervals are wall-clock seconds, so a demo clock running k times faster
    ages data k times faster too."""
    current = state()
    settings = current.settings
    if is_open is None:
        is_open = market_status(market_now()).is_open
    interval = settings.sync_interval_market if is_open else settings.sync_interval_closed
    return timedelta(seconds=2 * interval * clock_speed(current.market_clock))


def age_text(seconds: int | None) -> str:
    """ "4 s ago", "3 min ago", "2 h ago", "5 d ago"; "never" for None."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


bp.add_app_template_filter(age_text, "age")
for _name, _function in viewfmt.FILTERS.items():
    bp.add_app_template_filter(_function, _name)


def _context() -> dict[str, Any]:
    at = market_now()
    market = market_status(at)
    cards = queries.account_cards(db(), me().id, now=at, stale_after=stale_after(at, market.is_open))
    alerts = engine_alerts.open_alerts(db(), me().id)
    return {
        "cards": cards,
        "alerts": alerts,
        "alert_accounts": _account_names(alerts),
        "totals": queries.dashboard_totals(cards),
        "market": market,
        "generated_at": at,
        "poll_seconds": POLL_SECONDS,
    }


@bp.route("/")
def index() -> ResponseReturnValue:
    """The dashboard; signed out, the sign-in page (sign-up while nobody exists); with no trading
    account yet, the add-account form."""
    if not current_user.is_authenticated:
        # While nobody exists, the landing page is "create the administrator".
        if service.user_count(db()) == 0:
            return redirect(url_for("auth.register"))
        return redirect(url_for("auth.login"))
    context = _context()
    if not context["cards"]:
        return redirect(url_for("accounts.create"), code=303)
    return render_template("dashboard/index.html", **context)


def signed_out_fragment() -> Response | None:
    """For an htmx poll after the session ended: 401 with ``HX-Redirect`` to the login page, so the
    browser navigates there instead of swapping the login form into the polled fragment."""
    if current_user.is_authenticated or request.headers.get("HX-Request") != "true":
        return None
    response = Response("Signed out", status=401, mimetype="text/plain")
    # Back to the page the poll came from after signing in again (a same-site path only).
    page = urlsplit(request.headers.get("HX-Current-URL", ""))
    back = page.path + (f"?{page.query}" if page.query else "")
    if is_same_site_path(back) and back != "/":
        response.headers["HX-Redirect"] = url_for("auth.login", next=back)
    else:
        response.headers["HX-Redirect"] = url_for("auth.login")
    return response


def require_sign_in(blueprint: Blueprint) -> None:
    """Make every view of ``blueprint`` need a signed-in user: a page answers with the sign-in redirect,
    an htmx poll after the session ended with :func:`signed_out_fragment` (never the login form swapped
    into the fragment)."""

    @blueprint.before_request
    def _signed_in() -> ResponseReturnValue | None:
        return signed_out_fragment() or _login_redirect()


@login_required
def _login_redirect() -> None:
    return None


@bp.app_context_processor
def _header_poll() -> dict[str, Any]:
    return {"header_poll_seconds": POLL_SECONDS}


@bp.route("/dashboard/live")
def live() -> ResponseReturnValue:
    """The dashboard's polled fragment (see :func:`signed_out_fragment` for a poll after sign-out)."""
    return signed_out_fragment() or _live()


@login_required
def _live() -> ResponseReturnValue:
    """The totals and account cards (htmx polls this)."""
    return render_template("dashboard/_live.html", **_context())


def _account_names(alerts: list[EngineAlert]) -> dict[int, str]:
    ids = {a.account_id for a in alerts if a.account_id is not None}
    if not ids:
        return {}
    rows = db().execute(
        select(TradingAccount.id, TradingAccount.account_name).where(
            TradingAccount.id.in_(ids), TradingAccount.user_id == me().id
        )
    )
    return {int(account_id): str(name) for account_id, name in rows}


def open_alert_count() -> int:
    """The signed-in user's open alerts, for the header's badge (0 when signed out). One count per
    request; a database failure yields 0 (the header must not break a page)."""
    if not current_user.is_authenticated:
        return 0
    cached: int | None = g.get("open_alert_count")
    if cached is not None:
        return cached
    session = db()
    try:
        count = session.scalar(
            select(func.count())
            .select_from(EngineAlert)
            .where(EngineAlert.user_id == me().id, EngineAlert.acknowledged_at.is_(None))
        )
    except SQLAlchemyError as exc:
        session.rollback()
        current_app.logger.warning("could not count open alerts: %s", type(exc).__name__)
        count = 0
    result = int(count or 0)
    g.open_alert_count = result
    return result


@bp.app_context_processor
def _alert_helpers() -> dict[str, Any]:
    # A callable: a page that does not show the header's badge costs no query.
    return {"open_alert_count": open_alert_count}


@bp.route("/alerts/<id:alert_id>/acknowledge", methods=["POST"])
@login_required
def acknowledge_alert(alert_id: int) -> ResponseReturnValue:
    """Acknowledge one of the user's open alerts (CSRF-checked; another user's or an already
    acknowledged alert is a 404). Acknowledging changes no trading state: a halted account stays halted
    until its entries are resumed on the account page."""
    require_confirmation()
    session = db()
    if not engine_alerts.acknowledge_alert(session, alert_id, user_id=me().id, now=now()):
        abort(404)
    session.commit()
    return redirect_to("dashboard.index", "Alert acknowledged.")
