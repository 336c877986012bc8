"""Per-app state and per-request helpers shared by every blueprint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from argon2 import PasswordHasher
from flask import current_app, flash, g, has_app_context, has_request_context, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from algomirror.broker.facade import ConnectionTest
from algomirror.config import Settings
from algomirror.db.models import ActivityLog, User
from algomirror.db.models.app_settings import ENGINE_ENTRIES_HALTED, AppSetting
from algomirror.db.session import Database
from algomirror.domain.timeutil import Clock, SystemClock, to_ist, utcnow
from algomirror.security import SecretBox

ConnectionTester = Callable[[str, str], ConnectionTest]


def _default_tester(host_url: str, api_key: str) -> ConnectionTest:
    from algomirror.broker.facade import check_connection

    return check_connection(host_url, api_key, timeout=5.0)


@dataclass
class WebState:
    """Everything the views need besides the request. Tests may swap ``hasher`` and ``clock``."""

    settings: Settings
    database: Database
    hasher: PasswordHasher
    box: SecretBox
    clock: Clock = field(default_factory=SystemClock)
    # The clock the market runs on: the paper exchange's simulated clock in demo mode, else None
    # (= ``clock``). Market hours, book timestamps, "as of" and data ages use it (the demo's engine
    # stamps its rows with the same clock); sign-in, sessions and the activity log use ``clock``.
    market_clock: Clock | None = None
    connection_tester: ConnectionTester = _default_tester


def state() -> WebState:
    """This app's :class:`WebState` (needs an app context)."""
    return cast(WebState, current_app.extensions["algomirror"])


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def db() -> Session:
    """The request's database session (opened on first use, closed at the end of the request).

    Views commit explicitly; anything not committed is rolled back at teardown.
    """
    if "db_session" not in g:
        database = state().database
        # A GET only reads: a deferred transaction never waits for the engine's writes. Anything else
        # may write after reading, which on SQLite must hold the write lock from the start (a deferred
        # transaction that read, then writes after the engine committed, fails "database is locked").
        reads = has_request_context() and request.method in READ_METHODS
        g.db_session = (database.session_factory if reads else database.write_session_factory)()
    return cast(Session, g.db_session)


def release_db() -> None:
    """End the request's transaction (committing what the view wrote so far) before slow I/O such as a
    broker call: a write transaction must never be held across the network. The session stays usable;
    its next statement opens a new transaction."""
    session: Session | None = g.get("db_session")
    if session is not None and session.in_transaction():
        session.commit()


def close_db(_exc: BaseException | None = None) -> None:
    """Close the request's database session, if one was opened (app-context teardown)."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()


def now() -> datetime:
    """The current instant (aware UTC) from the app's injected clock."""
    return state().clock.now()


def market_now() -> datetime:
    """The market's current instant (aware UTC): market hours, data ages and "as of" times go by it
    (see ``WebState.market_clock``)."""
    current = state()
    return (current.market_clock or current.clock).now()


@dataclass(frozen=True)
class HeaderClock:
    """The header's market clock: ``text`` ("10:42 IST"), ``label`` (which clock it is) and ``note``
    (a sentence for the tooltip)."""

    text: str
    label: str
    note: str
    simulated: bool
    at: datetime


def header_clock() -> HeaderClock:
    """The market clock every page shows in its header, saying whether it is the demo's paper-exchange
    clock (which runs apart from this computer's) or the real one."""
    current = state()
    at = to_ist(market_now())
    text = at.strftime("%H:%M IST")
    if current.market_clock is not None:
        return HeaderClock(
            text=text,
            label="Demo market",
            note=(
                f"The demo's market runs on the paper exchange's clock ({at:%a %d %b %H:%M} IST), not on "
                "this computer's: prices, orders, positions and ages on every page follow it."
            ),
            simulated=True,
            at=at,
        )
    return HeaderClock(text=text, label="Market", note=f"{at:%a %d %b %Y %H:%M} IST", simulated=False, at=at)


# Header the page's background polls carry (hx-headers on every polled container): such a request is
# not the user doing something, so it never extends an idle session.
POLL_HEADER = "X-AlgoMirror-Poll"


def is_background_poll() -> bool:
    """Whether the current request is a live region's automatic refresh (see :data:`POLL_HEADER`)."""
    if not has_request_context():
        return False
    # An EventSource cannot send the header; its (re)connects every few minutes are not activity either.
    return request.headers.get(POLL_HEADER) == "1" or request.endpoint == "live.stream"


def client_ip() -> str | None:
    """The request's client address (at most 45 characters), or None outside a request."""
    if not has_request_context():
        return None
    return (request.remote_addr or "")[:45] or None


def client_agent() -> str | None:
    """The request's User-Agent (at most 200 characters), or None outside a request or when empty."""
    if not has_request_context():
        return None
    agent = request.headers.get("User-Agent", "")
    return agent[:200] or None


def log_activity(
    session: Session,
    action: str,
    *,
    user_id: int | None = None,
    account_id: int | None = None,
    details: str | None = None,
) -> ActivityLog:
    """Add an activity row (the caller commits). IP and agent come from the current request, if any."""
    row = ActivityLog(
        user_id=user_id,
        account_id=account_id,
        action=action,
        details=details[:2000] if details else None,
        ip_address=client_ip(),
        user_agent=client_agent(),
        timestamp=now() if has_app_context() else utcnow(),
    )
    session.add(row)
    return row


class SessionUser:
    """What Flask-Login holds: the ORM user plus the login id, which embeds ``session_version`` and the
    token of the browser's server-side session (``user_sessions``): ending that row, or a password
    change, signs out this session and its remember-me cookie."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, user: User, session_token: str = "") -> None:
        self.user = user
        self.id = user.id
        self.username = user.username
        self.is_admin = user.is_admin
        self.session_token = session_token

    @property
    def is_active(self) -> bool:
        """Whether the user may be signed in (an administrator can deactivate a user)."""
        return bool(self.user.is_active)

    def get_id(self) -> str:
        """The login id stored in the session and the remember-me cookie:
        ``"<user id>:<session_version>:<session token>"``."""
        return f"{self.user.id}:{self.user.session_version}:{self.session_token}"


def session_user() -> SessionUser:
    """The signed-in user as Flask-Login holds it (views behind ``login_required`` only).

    Raises RuntimeError when nobody is signed in: the calling view lacks ``login_required``.
    """
    # current_user is a proxy; isinstance sees the object behind it.
    user = current_user
    if not isinstance(user, SessionUser):
        raise RuntimeError("no signed-in user: the view is not behind login_required")
    return user


def me() -> User:
    """The signed-in ORM user (views behind ``login_required`` only; raises RuntimeError otherwise)."""
    return session_user().user


def is_same_site_path(target: str | None) -> bool:
    """True for a local path: exactly one leading '/', no scheme, no '//' or '/\\' tricks."""
    if not target or not target.startswith("/"):
        return False
    if target.startswith(("//", "/\\")):
        return False
    return not any(ch in target for ch in ("\\", "\r", "\n", "\t")) and ":" not in target.split("?")[0]


def redirect_to(
    endpoint: str, message: str | None = None, category: str = "success", **values: Any
) -> Response:
    """Flash ``message`` (if any) and redirect to ``endpoint`` (303: the browser follows with GET)."""
    if message:
        flash(message, category)
    return redirect(url_for(endpoint, **values), code=303)


def engine_halt_reason() -> str | None:
    """Why the engine halted entries (the durable flag a repeatedly crashing component sets), or None.
    For signed-in users only; one indexed look-up, made only by the base layout (partials skip it)."""
    if not current_user.is_authenticated:
        return None
    session = db()
    try:
        return session.scalar(select(AppSetting.value).where(AppSetting.key == ENGINE_ENTRIES_HALTED))
    except SQLAlchemyError as exc:
        # The banner must not turn a page (or the error page of a database outage) into a second failure.
        session.rollback()
        current_app.logger.warning("could not read the engine's entries-halted flag: %s", type(exc).__name__)
        return None


def engine_alerts() -> dict[str, Any]:
    """Context processor: ``engine_halt_reason()`` for the base layout's alert banner (a callable, so a
    page that does not show the banner costs no query)."""
    return {"engine_halt_reason": engine_halt_reason}
