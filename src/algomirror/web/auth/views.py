"""Sign-up (first user = administrator), sign-in with lock-out, sign-out (server-side sessions)."""

from __future__ import annotations

from datetime import timedelta

from argon2 import PasswordHasher
from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from algomirror.security import verify_password
from algomirror.web.auth import service, signin
from algomirror.web.context import (
    client_ip,
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
    elif form.is_submitted() and "csrf_token" not in form.errors:
        _attach_rule_errors(form)
    return render_template("auth/register.html", form=form, first=first)


def _attach_error(form: FlaskForm, exc: service.UserError) -> None:
    if not exc.problems:
        flash(str(exc), "error")
        return
    for name, messages in exc.problems.items():
        field = getattr(form, name, None)
        if field is not None:
            field.errors = [*field.errors, *messages]
        else:
            flash(" ".join(messages), "error")


def _attach_rule_errors(form: RegisterForm) -> None:
    """The user rules' errors (:func:`service.new_user_problems`) on the fields the form's own checks
    accepted, so one reply shows every invalid field's error, not only the form's."""
    problems = service.new_user_problems(
        form.username.data or "", form.email.data or "", form.password.data or ""
    )
    for name, messages in problems.items():
        field = getattr(form, name)
        if not field.errors:
            field.errors = [*messages]


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign-in (to sign-up while no user exists). Failures count towards the lock-out of this username
    from this address and the throttle of the address; every refusal gets the same answer. On success a
    fresh session starts, the owner is told of refused attempts since the last sign-in, and the browser
    goes to ``next`` if it is a local path."""
    session_db = db()
    if service.user_count(session_db) == 0:
        return redirect(url_for("auth.register"))
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    form.remember.label.text = f"Remember me for {_remember_days()} days"
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        response = _attempt_login(form)
        if response is not None:
            return response
    return render_template("auth/login.html", form=form, signup_open=service.signup_enabled(session_db))


def refusal_message() -> str:
    """The one answer to every refused sign-in (wrong username, wrong password, lock-out, throttled
    address), so the answer tells nobody which usernames exist or are locked."""
    settings = state().settings
    return (
        f"Wrong username or password. After {settings.login_max_failures} failed tries, sign-in from "
        f"here pauses for {settings.login_lockout_minutes} minutes."
    )


def _policy() -> service.LockPolicy:
    settings = state().settings
    return service.LockPolicy(
        max_failures=settings.login_max_failures,
        window=_minutes(settings.login_lockout_minutes),
        lockout=_minutes(settings.login_lockout_minutes),
        address_max_failures=settings.login_address_max_failures,
    )


def _attempt_login(form: LoginForm) -> Response | None:
    st = state()
    session_db = db()
    username = (form.username.data or "").strip().lower()
    password = form.password.data or ""
    user = service.find_user(session_db, username)
    # The password is checked on every path — unknown user, locked user, throttled address — so the
    # time to answer tells nothing either.
    password_ok = verify_password(
        st.hasher, user.password_hash if user is not None else _DUMMY_HASH.get(st.hasher), password
    )
    at, address, policy = now(), client_ip(), _policy()
    if service.address_locked_until(session_db, address, at, policy) is not None:
        log_activity(
            session_db,
            "login_throttled",
            user_id=user.id if user is not None else None,
            details=f"refused: too many failed sign-ins from this address (username {username[:80]!r})",
        )
        _refuse(session_db)
        return None
    if user is None:
        log_activity(session_db, "login_failed", details=f"unknown username {username[:80]!r}")
        _refuse(session_db)
        return None
    if service.locked_until(session_db, user.id, address, at, policy) is not None:
        log_activity(
            session_db,
            "login_locked",
            user_id=user.id,
            details="refused: too many failures from this address",
        )
        _refuse(session_db)
        return None
    if not password_ok:
        log_activity(session_db, "login_failed", user_id=user.id, details="wrong password")
        _refuse(session_db)
        return None
    if not user.is_active:
        # Shown only to someone who knows the password, so it reveals nothing to a guesser.
        log_activity(session_db, "login_failed", user_id=user.id, details="account deactivated")
        session_db.commit()
        flash("This user is deactivated. Ask an administrator to reactivate it.", "error")
        return None
    if st.hasher.check_needs_rehash(user.password_hash):
        user.password_hash = st.hasher.hash(password)
    failed = service.failed_sign_ins_since(session_db, user.id, user.last_login)
    user.last_login = at
    log_activity(session_db, "login", user_id=user.id)
    signin.sign_in(session_db, user, remember=bool(form.remember.data))
    session["seen"] = int(at.timestamp())
    if failed.count:
        _warn_failed(failed)
    target = form.next.data or ""
    return redirect(target if is_same_site_path(target) else url_for("dashboard.index"), code=303)


def _refuse(session_db: Session) -> None:
    session_db.commit()
    flash(refusal_message(), "error")


ADDRESSES_SHOWN = 5


def _warn_failed(failed: service.FailedSignIns) -> None:
    """Tell the owner how many sign-ins were refused since their last one, and from where."""
    shown = ", ".join(failed.addresses[:ADDRESSES_SHOWN])
    more = len(failed.addresses) - ADDRESSES_SHOWN
    where = f"{shown} and {more} more" if more > 0 else shown
    tries = "attempt" if failed.count == 1 else "attempts"
    flash(f"{failed.count} failed sign-in {tries} since your last sign-in, from {where}.", "warning")


def _remember_days() -> int:
    settings = state().settings
    return min(settings.remember_days, settings.session_max_days)


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
    """Sign out (a POST with the CSRF token, else 400): the session record ends, the session is cleared
    and the remember-me cookie deleted."""
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    session_db = db()
    user = session_user() if current_user.is_authenticated else None
    if user is not None:
        log_activity(session_db, "logout", user_id=user.id)
    signin.sign_out(session_db, user)
    return redirect_to("auth.login", "You are signed out.", "info")
