"""Server-side sign-in sessions, without Flask: start, look up, end, list, and name the device.

A signed-in browser holds a random token (in the signed session cookie, and in the remember-me cookie
when the user ticked "Remember me"); the database keeps only its SHA-256 in ``user_sessions``. A request
is signed in only while that row exists and is live (see :func:`is_live`), so deleting the row ends the
session everywhere at once, whatever cookies a browser — or a thief — still holds.

Used by the auth views, the settings and admin pages, and ``algomirror user reset-password`` (through
:func:`algomirror.web.auth.service.change_password`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from algomirror.db.models import User, UserSession

# ``last_seen_at`` is written at most this often per session: a write per request would serialise every
# page view on SQLite's single writer lock.
TOUCH_INTERVAL = timedelta(seconds=60)
AGENT_MAX = 200
ADDRESS_MAX = 45


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """How long a session lives: ``idle`` without a request (not for remember-me sessions) and
    ``absolute`` from sign-in (for every session)."""

    idle: timedelta
    absolute: timedelta


def new_token() -> str:
    """A fresh session token: 256 random bits, URL-safe (no ``:``, so it fits in the login id)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The SHA-256 (hex) of ``token``: what the database stores, so a copy of the table signs no one in."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_live(row: UserSession, now: datetime, limits: SessionLimits) -> bool:
    """Whether session ``row`` still signs its browser in at ``now`` (aware UTC): before its absolute
    end, and — unless it is a remember-me session — used within the idle limit. ``last_seen_at`` lags
    by up to :data:`TOUCH_INTERVAL`, which the idle check allows for."""
    if now >= row.expires_at:
        return False
    return row.remember or now - row.last_seen_at <= limits.idle + TOUCH_INTERVAL


def _dead(now: datetime, limits: SessionLimits) -> ColumnElement[bool]:
    """SQL for "no longer live" (the negation of :func:`is_live`)."""
    return or_(
        UserSession.expires_at <= now,
        and_(UserSession.remember.is_(False), UserSession.last_seen_at < now - limits.idle - TOUCH_INTERVAL),
    )


def start_session(
    session: Session,
    user_id: int,
    *,
    now: datetime,
    remember: bool,
    limits: SessionLimits,
    ip_address: str | None,
    user_agent: str | None,
) -> str:
    """Record a new session for ``user_id`` in the caller's transaction (the caller commits) and return
    its token (to be put in the cookie; it is not stored). The user's dead sessions are removed."""
    session.execute(delete(UserSession).where(UserSession.user_id == user_id, _dead(now, limits)))
    token = new_token()
    session.add(
        UserSession(
            user_id=user_id,
            key_hash=token_digest(token),
            remember=remember,
            created_at=now,
            last_seen_at=now,
            expires_at=now + limits.absolute,
            ip_address=(ip_address or "")[:ADDRESS_MAX] or None,
            user_agent=(user_agent or "")[:AGENT_MAX] or None,
        )
    )
    session.flush()
    return token


def find_session(session: Session, token: str) -> tuple[UserSession, User] | None:
    """The session row for ``token`` and its user (one indexed query), live or not; None if there is
    none. The caller judges liveness with :func:`is_live` and the user's own state."""
    row = session.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.key_hash == token_digest(token))
    ).first()
    if row is None:
        return None
    return row[0], row[1]


def needs_touch(row: UserSession, now: datetime) -> bool:
    """Whether ``last_seen_at`` is old enough to be written again (see :data:`TOUCH_INTERVAL`)."""
    return now - row.last_seen_at >= TOUCH_INTERVAL


def touch(session: Session, session_id: int, *, now: datetime, ip_address: str | None) -> None:
    """Set the session's last-seen time and address (the caller commits)."""
    session.execute(
        update(UserSession)
        .where(UserSession.id == session_id)
        .values(last_seen_at=now, ip_address=(ip_address or "")[:ADDRESS_MAX] or None)
    )


def end_session(session: Session, token: str) -> bool:
    """End the session holding ``token`` (the caller commits). False when there was none."""
    result = session.execute(delete(UserSession).where(UserSession.key_hash == token_digest(token)))
    return bool(getattr(result, "rowcount", 0))


def end_session_of(session: Session, user_id: int, session_id: int) -> bool:
    """End session ``session_id`` if it belongs to ``user_id`` (the caller commits). False when the user
    has no such session, which a view answers with 404."""
    result = session.execute(
        delete(UserSession).where(UserSession.id == session_id, UserSession.user_id == user_id)
    )
    return bool(getattr(result, "rowcount", 0))


def end_user_sessions(session: Session, user_id: int, *, keep_token: str | None = None) -> int:
    """End every session of ``user_id`` but the one holding ``keep_token`` (the caller commits).
    Returns how many ended."""
    query = delete(UserSession).where(UserSession.user_id == user_id)
    if keep_token is not None:
        query = query.where(UserSession.key_hash != token_digest(keep_token))
    result = session.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)


def live_sessions(session: Session, user_id: int, now: datetime, limits: SessionLimits) -> list[UserSession]:
    """The user's live sessions, most recently seen first."""
    rows = session.scalars(
        select(UserSession)
        .where(UserSession.user_id == user_id)
        .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
    ).all()
    return [row for row in rows if is_live(row, now, limits)]


_BROWSERS: tuple[tuple[str, str], ...] = (
    (r"Edg(?:e|A|iOS)?/", "Edge"),
    (r"OPR/|Opera", "Opera"),
    (r"Firefox/|FxiOS/", "Firefox"),
    (r"Chrome/|Chromium/|CriOS/", "Chrome"),
    (r"Safari/", "Safari"),
    (r"^curl/", "curl"),
    (r"python-requests|aiohttp|httpx|Werkzeug", "script"),
)
_SYSTEMS: tuple[tuple[str, str], ...] = (
    (r"Android", "Android"),
    (r"iPhone|iPad|iPod", "iOS"),
    (r"Windows", "Windows"),
    (r"Mac OS X|Macintosh", "macOS"),
    (r"CrOS", "ChromeOS"),
    (r"Linux|X11", "Linux"),
)


def describe_agent(agent: str | None) -> str:
    """A short device name from a User-Agent ("Firefox on Linux"); "Unknown device" when it says
    nothing recognisable. Only a hint: the header is whatever the client sent."""
    if not agent:
        return "Unknown device"
    browser = next((name for pattern, name in _BROWSERS if re.search(pattern, agent)), None)
    system = next((name for pattern, name in _SYSTEMS if re.search(pattern, agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"
