"""Settings page. For now: change password (the other user settings arrive with their features)."""

from __future__ import annotations

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import login_required, login_user

from algomirror.security import verify_password
from algomirror.web.auth import service
from algomirror.web.context import SessionUser, db, log_activity, me, redirect_to, state
from algomirror.web.forms import ChangePasswordForm

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.route("/", methods=["GET"])
@login_required
def index() -> ResponseReturnValue:
    """The settings page with an empty change-password form."""
    return render_template("settings/index.html", form=ChangePasswordForm())


@bp.route("/password", methods=["POST"])
@login_required
def change_password() -> ResponseReturnValue:
    """Change the signed-in user's password: on success every other session and remember-me cookie
    ends and this one continues (303 back to settings); a wrong current password or a refused new one
    re-renders the form with 400."""
    form = ChangePasswordForm()
    user = me()
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
                service.change_password(session_db, state().hasher, user, form.new_password.data or "")
            except service.UserError as exc:
                session_db.rollback()
                form.new_password.errors = [*form.new_password.errors, str(exc)]
            else:
                log_activity(session_db, "password_changed", user_id=user.id)
                session_db.commit()
                # This session continues under the new session_version; every other one ends.
                remembered = request.cookies.get("algomirror_remember") is not None
                login_user(SessionUser(user), remember=remembered)
                return redirect_to("settings.index", "Password changed. Your other sessions were signed out.")
    return render_template("settings/index.html", form=form), 400
