"""Settings page: change password, and "Your sessions" (every signed-in browser, with sign-out per row).
The other user settings arrive with their features."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import login_required

from algomirror.security import verify_password
from algomirror.web.auth import service, sessions
from algomirror.web.auth.signin import session_limits, sign_in, sign_out
from algomirror.web.context import (
    db,
    log_activity,
    me,
    now,
    redirect_to,
    session_user,
    state,
)
from algomirror.web.forms import ChangePasswordForm, require_confirmation

bp = Blueprint("settings", __name__, url_prefix="/settings")


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One line of "Your sessions"."""

    id: int
    device: str
    address: str
    started: datetime
    last_seen: datetime
    remember: bool
    current: bool


def _session_rows() -> list[SessionRow]:
    user = session_user()
    here = sessions.token_digest(user.session_token)
    return [
        SessionRow(
            id=row.id,
            device=sessions.describe_agent(row.user_agent),
            address=row.ip_address or "unknown",
            started=row.created_at,
            last_seen=row.last_seen_at,
            remember=row.remember,
            current=row.key_hash == here,
        )
        for row in sessions.live_sessions(db(), user.id, now(), session_limits())
    ]


def _page(form: ChangePasswordForm) -> str:
    context: dict[str, Any] = {"form": form, "sessions": _session_rows()}
    return render_template("settings/index.html", **context)


@bp.route("/", methods=["GET"])
@login_required
def index() -> ResponseReturnValue:
    """The settings page: an empty change-password form and the user's live sessions."""
    return _page(ChangePasswordForm())


@bp.route("/password", methods=["POST"])
@login_required
def change_password() -> ResponseReturnValue:
    """Change the signed-in user's password: on success every other session and remember-me cookie
    ends and this one continues (303 back to settings); a wrong current password or a refused new one
    re-renders the form with 400."""
    form = ChangePasswordForm()
    user = me()
    token = session_user().session_token
    session_db = db()
    if form.validate_on_submit():
        if not verify_password(state().hasher, user.password_hash, form.current_password.data or ""):
            form.current_password.errors = [*form.current_password.errors, "Current password is wrong."]
            log_activity(
                session_db, "password_change_failed", user_id=user.id, details="wrong current password"
            )
            session_db.commit()
        else:
            try:
                service.change_password(
                    session_db, state().hasher, user, form.new_password.data or "", keep_session=token
                )
            except service.UserError as exc:
                session_db.rollback()
                form.new_password.errors = [*form.new_password.errors, str(exc)]
            else:
                log_activity(session_db, "password_changed", user_id=user.id)
                # This browser continues in a new session under a new token: a copy of its old cookie
                # (the reason to change a password) dies with the other sessions.
                remembered = request.cookies.get("algomirror_remember") is not None
                sign_in(session_db, user, remember=remembered)
                return redirect_to("settings.index", "Password changed. Your other sessions were signed out.")
    return _page(form), 400


@bp.route("/sessions/<id:session_id>/end", methods=["POST"])
@login_required
def end_session(session_id: int) -> ResponseReturnValue:
    """Sign out one of the user's own sessions (CSRF-checked; 404 when ``session_id`` is not one of
    them). Ending this browser's own session signs it out here too."""
    require_confirmation()
    user = session_user()
    session_db = db()
    found = sessions.find_session(session_db, user.session_token)
    current = found is not None and found[0].id == session_id
    if not sessions.end_session_of(session_db, user.id, session_id):
        abort(404)
    log_activity(session_db, "session_ended", user_id=user.id, details=f"session {session_id}")
    if current:
        sign_out(session_db, user)
        return redirect_to("auth.login", "You are signed out.", "info")
    session_db.commit()
    return redirect_to("settings.index", "That session is signed out.")


@bp.route("/sessions/end-others", methods=["POST"])
@login_required
def end_other_sessions() -> ResponseReturnValue:
    """Sign out every session of the user but this one (CSRF-checked)."""
    require_confirmation()
    user = session_user()
    session_db = db()
    ended = sessions.end_user_sessions(session_db, user.id, keep_token=user.session_token)
    log_activity(session_db, "sessions_ended", user_id=user.id, details=f"{ended} other sessions")
    session_db.commit()
    return redirect_to("settings.index", "Your other sessions are signed out.")
