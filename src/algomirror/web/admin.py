"""Administrator pages: users (activate, deactivate, make admin, sign out everywhere) and the sign-up
switch."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select
from werkzeug.wrappers import Response

from algomirror.db.models import User
from algomirror.host_settings import load_host_policy, save_host_policy
from algomirror.web.auth import service, sessions
from algomirror.web.context import db, log_activity, me, redirect_to, session_user
from algomirror.web.forms import AccountHostsForm, ConfirmForm, require_confirmation

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@login_required
def require_admin() -> None:
    """Refuse (403) every admin page to a signed-in user who is not an administrator."""
    if not session_user().is_admin or not me().is_admin:
        abort(403)


@bp.route("/")
def index() -> ResponseReturnValue:
    """The user list with the activate/deactivate/make-admin buttons and the sign-up switch."""
    return _index_page(None)


def _index_page(hosts_form: AccountHostsForm | None) -> ResponseReturnValue:
    """The admin page; ``hosts_form`` is a submitted allow-list form to show again with its errors."""
    session_db = db()
    users = session_db.scalars(select(User).order_by(User.id)).all()
    policy = load_host_policy(session_db)
    if hosts_form is None:
        hosts_form = AccountHostsForm(formdata=None)
        hosts_form.restricted.data = policy.restricted
        hosts_form.allow_loopback.data = policy.allow_loopback
        hosts_form.entries.data = "\n".join(policy.entries)
    return render_template(
        "admin/users.html",
        users=users,
        signup_enabled=service.signup_enabled(session_db),
        form=ConfirmForm(),
        host_policy=policy,
        hosts_form=hosts_form,
    ), (400 if hosts_form.errors else 200)


def _target(user_id: int) -> User:
    user = db().get(User, user_id)
    if user is None:
        abort(404)
    return user


def _saved(user: User, event: str, message: str) -> Response:
    """Log ``event`` against the acting admin, commit the change to ``user`` and go back to the list."""
    log_activity(db(), event, user_id=me().id, details=f"user {user.username} (id {user.id})")
    db().commit()
    return redirect_to("admin.index", message)


@bp.route("/users/<id:user_id>/activate", methods=["POST"])
def activate(user_id: int) -> ResponseReturnValue:
    """Let user ``user_id`` sign in again (404 if there is no such user)."""
    require_confirmation()
    user = _target(user_id)
    user.is_active = True
    return _saved(user, "user_activated", f"{user.username} is active.")


@bp.route("/users/<id:user_id>/deactivate", methods=["POST"])
def deactivate(user_id: int) -> ResponseReturnValue:
    """Stop user ``user_id`` from signing in (not oneself; 404 if there is no such user)."""
    require_confirmation()
    user = _target(user_id)
    if user.id == me().id:
        return redirect_to("admin.index", "You cannot deactivate yourself.", "error")
    user.is_active = False
    # Ended, not merely refused while inactive: reactivating the user must not revive them.
    sessions.end_user_sessions(db(), user.id)
    return _saved(user, "user_deactivated", f"{user.username} is deactivated and can no longer sign in.")


@bp.route("/users/<id:user_id>/sign-out", methods=["POST"])
def sign_out_everywhere(user_id: int) -> ResponseReturnValue:
    """End every session of user ``user_id`` at once, remember-me ones included (404 if there is no
    such user). The administrator's own sessions included, when it is them."""
    require_confirmation()
    user = _target(user_id)
    ended = sessions.end_user_sessions(db(), user.id)
    return _saved(user, "user_signed_out", f"{user.username} is signed out everywhere ({ended} sessions).")


@bp.route("/users/<id:user_id>/make-admin", methods=["POST"])
def make_admin(user_id: int) -> ResponseReturnValue:
    """Make user ``user_id`` an administrator (404 if there is no such user)."""
    require_confirmation()
    user = _target(user_id)
    user.is_admin = True
    return _saved(user, "user_made_admin", f"{user.username} is now an administrator.")


@bp.route("/signup", methods=["POST"])
def toggle_signup() -> ResponseReturnValue:
    """Open sign-up if it is closed, close it if it is open."""
    require_confirmation()
    session_db = db()
    enabled = not service.signup_enabled(session_db)
    service.set_signup_enabled(session_db, enabled)
    log_activity(session_db, "settings_changed", user_id=me().id, details=f"signup_enabled={enabled}")
    session_db.commit()
    return redirect_to("admin.index", "Sign-up is now open." if enabled else "Sign-up is now closed.")


@bp.route("/account-hosts", methods=["POST"])
def account_hosts() -> ResponseReturnValue:
    """Save the allow-list of account hosts (400 with the errors beside the fields when it cannot be
    read). Checked when an account is saved or tested, and by the engine before every broker call."""
    form = AccountHostsForm()
    if not form.validate_on_submit():
        return _index_page(form)
    policy = form.policy()
    session_db = db()
    save_host_policy(session_db, policy)
    details = (
        f"account_hosts=restricted loopback={policy.allow_loopback} entries={len(policy.entries)}"
        if policy.restricted
        else "account_hosts=any"
    )
    log_activity(session_db, "settings_changed", user_id=me().id, details=details)
    session_db.commit()
    if not policy.restricted:
        return redirect_to("admin.index", "Accounts may use any host.")
    return redirect_to("admin.index", "Accounts may use only the allowed hosts.")
