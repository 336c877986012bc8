"""The Flask side of server-side sessions: sign a browser in and out, and load the signed-in user of
each request from its session record (see :mod:`algomirror.web.auth.sessions`)."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, request
from flask import session as cookie_session
from flask_login import login_user, logout_user
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.db.models import User, UserSession
from algomirror.web.auth import sessions
from algomirror.web.context import (
    READ_METHODS,
    SessionUser,
    client_agent,
    client_ip,
    db,
    is_background_poll,
    now,
    state,
)


def session_limits() -> sessions.SessionLimits:
    """The idle and absolute session lifetimes from the settings."""
    settings = state().settings
    return sessions.SessionLimits(
        idle=timedelta(hours=settings.session_idle_hours), absolute=timedelta(days=settings.session_max_days)
    )


def parse_login_id(login_id: object) -> tuple[int, int, str] | None:
    """``(user id, session_version, session token)`` from a login id (see ``SessionUser.get_id``), or
    None when it is not one (e.g. a cookie from before server-side sessions)."""
    if not isinstance(login_id, str):
        return None
    parts = login_id.split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or not parts[2]:
        return None
    return int(parts[0]), int(parts[1]), parts[2]


def _cookie_token() -> str | None:
    parsed = parse_login_id(cookie_session.get("_user_id"))
    return parsed[2] if parsed else None


def load_session_user(login_id: str) -> SessionUser | None:
    """Flask-Login's user loader (for the session cookie and the remember-me cookie alike): the user
    whose live session record holds the login id's token, or None (signed out). One indexed query; the
    record's last-seen time is written at most once a minute."""
    parsed = parse_login_id(login_id)
    if parsed is None:
        return None
    user_id, version, token = parsed
    found = sessions.find_session(db(), token)
    if found is None:
        return None
    row, user = found
    current = now()
    if (
        user.id != user_id
        or not user.is_active
        or user.session_version != version
        or not sessions.is_live(row, current, session_limits())
    ):
        return None
    if sessions.needs_touch(row, current) and not is_background_poll():
        _touch(row)
    return SessionUser(user, token)


def _touch(row: UserSession) -> None:
    current, address = now(), client_ip()
    if request.method not in READ_METHODS:
        # This request's transaction may write already (and on SQLite holds the writer lock, so a second
        # writer would wait on it): the change is committed with the view's own work.
        row.last_seen_at, row.ip_address = current, address
        return
    # A GET's transaction only reads (on SQLite a deferred one that must never turn into a write): the
    # last-seen time goes through a short write session of its own.
    try:
        with state().database.session() as write:
            sessions.touch(write, row.id, now=current, ip_address=address)
    except SQLAlchemyError as exc:
        # Only the "last seen" column is lost; the page must not fail for it. Retried next request.
        current_app.logger.warning("could not record a session's last-seen time: %s", type(exc).__name__)


def sign_in(session_db: Session, user: User, *, remember: bool) -> str:
    """Start a fresh session for ``user`` in this browser: the browser's previous session record ends,
    a new one is recorded, the caller's transaction is committed, and the cookie session starts empty
    with the new login id (plus a remember-me cookie when ``remember``; an older remember-me cookie is
    deleted otherwise). Returns the session token."""
    previous = _cookie_token()
    if previous is not None:
        sessions.end_session(session_db, previous)
    token = sessions.start_session(
        session_db,
        user.id,
        now=now(),
        remember=remember,
        limits=session_limits(),
        ip_address=client_ip(),
        user_agent=client_agent(),
    )
    session_db.commit()
    had_remember_cookie = current_app.config["REMEMBER_COOKIE_NAME"] in request.cookies
    # Nothing from before the sign-in carries over.
    cookie_session.clear()
    login_user(SessionUser(user, token), remember=remember)
    if had_remember_cookie and not remember:
        cookie_session["_remember"] = "clear"
    return token


def sign_out(session_db: Session, user: SessionUser | None) -> None:
    """End this browser's session: its record is deleted (so a copied cookie is dead too), the caller's
    transaction is committed, the cookie session is emptied and the remember-me cookie deleted."""
    tokens = {token for token in (_cookie_token(), user.session_token if user else None) if token}
    for token in tokens:
        sessions.end_session(session_db, token)
    session_db.commit()
    cookie_session.clear()
    # After clear(): logout_user() marks the remember-me cookie for deletion in the session, and clearing
    # after it (as sign-out once did) dropped that mark, so the cookie signed the browser in again.
    logout_user()
