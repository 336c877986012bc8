"""Sign-up (first user = administrator), sign-in with lock-out, sign-out."""

from __future__ import annotations

from datetime import timedelta

from argon2 import PasswordHasher
from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.wrappers import Response

from algomirror.domain.timeutil import format_ist
from algomirror.security import verify_password
from algomirror.web.auth import service
from algomirror.web.context import (
    SessionUser,
    db,
    is_same_site_path,
    log_activity,
    now,
    redirect_to,
    session_user,
    state,
)
from algomirror.web.forms import ConfirmForm, LoginForm, RegisterForm

bp = Blueprint("auth", __name__)


@bp.route("/register", methods=["GET", "POST"])
def register() -> ResponseReturnValue:
    """Sign-up: the first user becomes the administrator; later ones only while sign-up is open (else
    403). A refused or raced sign-up re-renders the form with the reason."""
    session_db = db()
    first = service.user_count(session_db) == 0
    if not first and not service.signup_enabled(session_db):
        return render_template("auth/signup_closed.html"), 403
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = service.create_user(
                session_db,
                state().hasher,
                username=form.username.data or "",
                email=form.email.data or "",
                password=form.password.data or "",
                require_open_signup=True,
            )
            log_activity(
                session_db,
                "register",
                user_id=user.id,
                details="administrator (first user)" if user.is_admin else None,
            )
            session_db.commit()
        except service.UserError as exc:
            session_db.rollback()
            _attach_error(form, exc)
        except (IntegrityError, OperationalError):
            # A concurrent sign-up won the race for the same name or the first-user slot.
            session_db.rollback()
            form.username.errors = [
                *form.username.errors,
                "That username or email was just taken; try again.",
            ]
        else:
            return redirect_to("auth.login", "Account created. Sign in with your new password.")
    return render_template("auth/register.html", form=form, first=first)


def _attach_error(form: FlaskForm, exc: service.UserError) -> None:
    field = getattr(form, exc.field, None) if exc.field else None
    if field is not None:
        field.errors = [*field.errors, str(exc)]
    else:
        flash(str(exc), "error")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign-in (to sign-up while no user exists). Failures count towards the username's lock-out; on
    success a fresh session starts and the browser goes to ``next`` if it is a local path."""
    session_db = db()
    if service.user_count(session_db) == 0:
        return redirect(url_for("auth.register"))
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        response = _attempt_login(form)
        if response is not None:
            return response
    return render_template("auth/login.html", form=form)


def _attempt_login(form: LoginForm) -> Response | None:
    st = state()
    session_db = db()
    username = (form.username.data or "").strip().lower()
    password = form.password.data or ""
    user = service.find_user(session_db, username)
    if user is None:
        # Same work as a real check, so response time does not reveal which usernames exist.
        verify_password(st.hasher, _DUMMY_HASH.get(st.hasher), password)
        log_activity(session_db, "login_failed", details=f"unknown username {username[:80]!r}")
        session_db.commit()
        flash("Wrong username or password.", "error")
        return None
    policy = service.LockPolicy(
        max_failures=st.settings.login_max_failures,
        window=_minutes(st.settings.login_lockout_minutes),
        lockout=_minutes(st.settings.login_lockout_minutes),
    )
    until = service.locked_until(session_db, user.id, now(), policy)
    if until is not None:
        log_activity(session_db, "login_locked", user_id=user.id, details="refused: too many failures")
        session_db.commit()
        flash(
            f"Too many failed sign-ins for this username. Try again after {format_ist(until, '%H:%M')}.",
            "error",
        )
        return None
    if not verify_password(st.hasher, user.password_hash, password):
        log_activity(session_db, "login_failed", user_id=user.id, details="wrong password")
        session_db.commit()
        flash("Wrong username or password.", "error")
        return None
    if not user.is_active:
        log_activity(session_db, "login_failed", user_id=user.id, details="account deactivated")
        session_db.commit()
        flash("This user is deactivated. Ask an administrator to reactivate it.", "error")
        return None
    if st.hasher.check_needs_rehash(user.password_hash):
        user.password_hash = st.hasher.hash(password)
    user.last_login = now()
    log_activity(session_db, "login", user_id=user.id)
    session_db.commit()
    # A fresh session on sign-in: nothing from before the login carries over.
    session.clear()
    login_user(SessionUser(user), remember=bool(form.remember.data))
    session["seen"] = int(now().timestamp())
    target = form.next.data or ""
    return redirect(target if is_same_site_path(target) else url_for("dashboard.index"), code=303)


def _minutes(value: int) -> timedelta:
    return timedelta(minutes=value)


class _DummyHash:
    """A hash of a random password per hasher configuration, for constant-time misses."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def get(self, hasher: PasswordHasher) -> str:
        key = id(hasher)
        if key not in self._cache:
            self._cache[key] = hasher.hash("not-a-real-password-" + str(key))
        return self._cache[key]


_DUMMY_HASH = _DummyHash()


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    """Sign out (a POST with the CSRF token, else 400) and clear the session."""
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    if current_user.is_authenticated:
        session_db = db()
        log_activity(session_db, "logout", user_id=session_user().id)
        session_db.commit()
    logout_user()
    session.clear()
    return redirect_to("auth.login", "You are signed out.", "info")
