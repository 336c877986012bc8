"""Flask app factory: extensions, blueprints, security headers, error pages, template helpers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from flask import Flask, Response, jsonify, render_template, request, session
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from algomirror.config import Settings, load_settings
from algomirror.db.session import Database
from algomirror.domain.money import format_inr
from algomirror.domain.timeutil import format_ist
from algomirror.live import LiveBus, build_bus
from algomirror.security import SecretBox, install_redaction, make_password_hasher, mask_key
from algomirror.web.auth.signin import load_session_user
from algomirror.web.context import (
    SessionUser,
    WebState,
    close_db,
    engine_alerts,
    header_clock,
    is_background_poll,
)
from algomirror.web.context import now as state_now
from algomirror.web.ids import IdConverter
from algomirror.web.routing import AlgoMirrorFlask

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'self'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Largest request body we accept: forms are small; a 10 KB field is still refused by the form itself.
MAX_CONTENT_LENGTH = 256 * 1024

ERROR_TEXT = {
    400: ("Bad request", "The request could not be understood."),
    403: ("Forbidden", "You do not have access to this page."),
    404: ("Not found", "There is nothing here, or it is not yours."),
    405: ("Method not allowed", "This address does not accept that kind of request."),
    413: ("Too large", "The request is too large."),
    429: ("Too many requests", "Slow down: too many requests. Try again in a minute."),
    500: ("Server error", "Something went wrong on our side. The error has been logged."),
}


# The main navigation: (endpoint, label, shortcut key), in the order of the header; "g" then the key
# opens the page (app.js).
NAV_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("dashboard.index", "Dashboard", "d"),
    ("books.positions", "Positions", "p"),
    ("books.orders", "Orders", "o"),
    ("books.trades", "Trades", "t"),
    ("books.holdings", "Holdings", "h"),
    ("books.funds", "Funds", "f"),
    ("strategies.index", "Strategies", "s"),
    ("risk.index", "Risk", "r"),
    ("accounts.index", "Accounts", "a"),
    ("activity.index", "Activity", "l"),
    ("settings.index", "Settings", "e"),
)

# The configuration pages grouped under Settings (the header has room for eleven links at 1280 px): a tab
# row on each of them, and "g" + key shortcuts listed (as links) in the shortcut dialog.
SETTINGS_PAGES: tuple[tuple[str, str, str], ...] = (
    ("settings.index", "Your account", "e"),
    ("sizing.index", "Sizing", "z"),
    ("margins.index", "Margins", "m"),
    ("calendar.index", "Calendar", "c"),
)
SETTINGS_BLUEPRINTS = frozenset(endpoint.split(".")[0] for endpoint, _label, _key in SETTINGS_PAGES)


def money_class(value: Decimal | int | float | None) -> str:
    """CSS class for a signed amount: ``positive``, ``negative`` or ``zero`` (``unknown`` for None)."""
    if value is None:
        return "unknown"
    if value > 0:
        return "positive"
    if value < 0:
        return "negative"
    return "zero"


def wants_json() -> bool:
    """Whether this request should get a JSON error rather than a page: API paths, htmx requests, and
    clients that prefer JSON to HTML."""
    if request.path.startswith("/api/") or request.headers.get("HX-Request") == "true":
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


def error_response(code: int, message: str | None = None) -> tuple[Response | str, int]:
    """The error answer for HTTP status ``code``: JSON (see :func:`wants_json`) or the error page, with
    ``message`` or the status's default text."""
    title, default = ERROR_TEXT.get(code, ("Error", "Something went wrong."))
    text = message or default
    if wants_json():
        return jsonify({"error": title.lower().replace(" ", "_"), "message": text, "status": code}), code
    return render_template("errors/error.html", code=code, title=title, message=text), code


def create_app(
    settings: Settings | None = None, *, database: Database | None = None, bus: LiveBus | None = None
) -> Flask:
    """Build the web app. Without ``settings`` they are loaded from the environment; without
    ``database`` one is opened on ``settings.effective_database_url``; without ``bus`` the live bus is
    :func:`~algomirror.live.build_bus`'s (Redis when configured, else a new in-process bus: pass the
    engine's bus when it runs in this process)."""
    settings = settings or load_settings()
    database = database or Database(settings.effective_database_url, settings)
    app = AlgoMirrorFlask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key_value(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_NAME="algomirror_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_idle_hours),
        SESSION_REFRESH_EACH_REQUEST=True,
        # Never beyond the session's absolute lifetime: the server ends the session then anyway.
        REMEMBER_COOKIE_DURATION=timedelta(days=min(settings.remember_days, settings.session_max_days)),
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_NAME="algomirror_remember",
        WTF_CSRF_ENABLED=True,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_HEADERS=["X-CSRFToken", "X-CSRF-Token"],
        MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH,
        # Server-Sent Events (web/live.py): every open stream holds a server thread, hence the caps.
        LIVE_KEEPALIVE_SECONDS=15.0,
        LIVE_MAX_STREAM_SECONDS=300.0,
        LIVE_STREAMS_PER_USER=6,
        LIVE_MAX_STREAMS=24,
    )
    app.extensions["algomirror"] = WebState(
        settings=settings,
        database=database,
        hasher=make_password_hasher(),
        box=SecretBox(settings.fernet_key_value()),
    )
    app.extensions["live_bus"] = bus if bus is not None else build_bus(settings)
    install_redaction(settings.secret_values())

    CSRFProtect(app)
    limiter = Limiter(
        get_remote_address,
        app=app,
        application_limits=[settings.ratelimit_global],
        storage_uri=settings.redis_url or "memory://",
        # A Redis outage must not take the pages down (exits must stay reachable): count in memory
        # until Redis answers again.
        in_memory_fallback_enabled=True,
        headers_enabled=True,
        strategy="fixed-window",
    )
    _init_login(app)
    _register_blueprints(app, limiter, settings)
    if settings.trust_proxy:
        # Behind N trusted proxies: the client address (activity log, rate limits) and the scheme/host
        # (redirects, secure cookies) come from the X-Forwarded-* headers those proxies set.
        hops = settings.trust_proxy
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
    _register_hooks(app, settings)
    _register_errors(app)
    _register_template_helpers(app)
    return app


def _init_login(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "auth.login"
    manager.login_message = "Please sign in to continue."
    manager.login_message_category = "info"
    manager.session_protection = "basic"

    @manager.user_loader
    def load_user(login_id: str) -> SessionUser | None:
        # Checked against the session's server-side record on every request (nothing cached).
        return load_session_user(login_id)


def _register_blueprints(app: Flask, limiter: Limiter, settings: Settings) -> None:
    from algomirror.web.accounts.views import bp as accounts_bp
    from algomirror.web.activity import bp as activity_bp
    from algomirror.web.admin import bp as admin_bp
    from algomirror.web.auth.views import bp as auth_bp
    from algomirror.web.books import bp as books_bp
    from algomirror.web.calendar_pages import bp as calendar_bp
    from algomirror.web.dashboard import bp as dashboard_bp
    from algomirror.web.health import bp as health_bp
    from algomirror.web.kill_switch import bp as kill_switch_bp
    from algomirror.web.live import bp as live_bp
    from algomirror.web.margin_pages import bp as margins_bp
    from algomirror.web.market_data import bp as market_data_bp
    from algomirror.web.market_strip import bp as market_bp
    from algomirror.web.mirror import bp as mirror_bp
    from algomirror.web.monitoring import bp as monitoring_bp
    from algomirror.web.premium_chart import bp as premium_chart_bp
    from algomirror.web.risk import bp as risk_bp
    from algomirror.web.settings_page import bp as settings_bp
    from algomirror.web.sizing_pages import bp as sizing_bp
    from algomirror.web.strategies import bp as strategies_bp

    # ``<id:…>`` in a route: a row id in 1..2^31-1, anything else 404 before a query (web/ids.py).
    app.url_map.converters["id"] = IdConverter
    limiter.limit(settings.ratelimit_auth)(auth_bp)
    for blueprint in (
        auth_bp,
        dashboard_bp,
        accounts_bp,
        activity_bp,
        admin_bp,
        monitoring_bp,
        settings_bp,
        sizing_bp,
        margins_bp,
        calendar_bp,
        strategies_bp,
        mirror_bp,
        risk_bp,
        kill_switch_bp,
        premium_chart_bp,
        market_data_bp,
        books_bp,
        market_bp,
        live_bp,
        health_bp,
    ):
        app.register_blueprint(blueprint)
    # Broker-touching routes share one tighter budget per IP.
    broker_limit = limiter.shared_limit(settings.ratelimit_broker, scope="broker")
    for endpoint in ("accounts.test_new", "accounts.test_edit", "accounts.test_saved"):
        # Flask types a view as sync-or-async, which the limiter's generic decorator cannot bind; these
        # views are sync (and the limiter's wrapper is sync either way: it calls through ensure_sync).
        view = cast(Callable[..., ResponseReturnValue], app.view_functions[endpoint])
        app.view_functions[endpoint] = broker_limit(view)


def _register_hooks(app: Flask, settings: Settings) -> None:
    idle_seconds = settings.session_idle_hours * 3600

    @app.before_request
    def idle_timeout() -> None:
        # Server-side idle check: the cookie's own expiry is only a hint to the browser.
        now = int(state_now().timestamp())
        seen = session.get("seen")
        if isinstance(seen, int) and now - seen > idle_seconds:
            session.clear()
        # A live region's refresh is not activity: a forgotten tab still reaches the idle limit.
        if ("_user_id" in session or seen is not None) and not is_background_poll():
            session["seen"] = now
        session.permanent = True

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if settings.secure_cookies:
            # Served over HTTPS (that is what the setting says): browsers must not fall back to HTTP.
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "public, max-age=3600")
        else:
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.teardown_appcontext(close_db)


def _register_errors(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> tuple[Response | str, int]:
        return error_response(
            400,
            "The form was missing its security token or it had expired. Reload the page and try again.",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        code = exc.code or 500
        if code == 429:
            body, status = error_response(429)
            response = app.make_response((body, status))
            retry = getattr(exc, "retry_after", None)
            if retry:
                response.headers["Retry-After"] = str(retry)
            return response
        if code in ERROR_TEXT:
            return error_response(code)
        return exc

    @app.errorhandler(Exception)
    def server_error(exc: Exception) -> tuple[Response | str, int]:
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500)


def _register_template_helpers(app: Flask) -> None:
    app.add_template_filter(lambda value, places=2: format_inr(value, places=places), "inr")
    app.add_template_filter(format_ist, "ist")
    app.add_template_filter(mask_key, "masked_key")
    app.add_template_global(money_class, "money_class")
    app.add_template_filter(money_class, "money_class")

    app.context_processor(engine_alerts)

    @app.context_processor
    def nav_items() -> dict[str, Any]:
        return {
            "nav_items": NAV_ITEMS,
            "settings_pages": SETTINGS_PAGES,
            "settings_blueprints": SETTINGS_BLUEPRINTS,
            "header_clock": header_clock,
        }
