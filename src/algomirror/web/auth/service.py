"""User rules without Flask: creation (first user = admin), sign-up switch, lock-out, password change.

Used by the auth views and by ``algomirror user …``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from algomirror.db.defaults import seed_user_defaults
from algomirror.db.models import ActivityLog, User
from algomirror.db.models.app_settings import SIGNUP_ENABLED, AppSetting
from algomirror.security import check_password_policy, check_username, normalize_username

EMAIL_MAX = 120


class UserError(Exception):
    """A user-facing problem with the input; ``field`` names the form field it belongs to."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def normalize_email(email: str) -> str:
    """Lower-cased, validated address. Raises :class:`UserError` when it is not a valid address."""
    raw = email.strip()
    if not raw or len(raw) > EMAIL_MAX:
        raise UserError(f"Enter a valid email address (at most {EMAIL_MAX} characters).", "email")
    try:
        info = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        raise UserError(f"Enter a valid email address: {exc}", "email") from None
    return info.normalized.lower()


def _lock_users_table(session: Session) -> None:
    """Serialise concurrent first sign-ups: the count and the insert run under a write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # A write statement makes SQLite take its single writer lock before we read the count.
        session.execute(delete(User).where(User.id == -1))


def validate_new_user(username: str, email: str, password: str) -> tuple[str, str]:
    """Normalised (username, email). Raises :class:`UserError` for the first problem found."""
    name = normalize_username(username)
    problem = check_username(name)
    if problem:
        raise UserError(problem, "username")
    address = normalize_email(email)
    policy = check_password_policy(password, username=name, email=address)
    if not policy.ok:
        raise UserError(" ".join(policy.errors), "password")
    return name, address


def create_user(
    session: Session,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    password: str,
    admin: bool = False,
    require_open_signup: bool = False,
) -> User:
    """Insert a user in the caller's transaction (the caller commits).

    The very first user is always an administrator. With ``require_open_signup``, refuses (UserError)
    when users exist and the sign-up switch is off. Raises :class:`UserError` for invalid or taken
    username/email.
    """
    name, address = validate_new_user(username, email, password)
    _lock_users_table(session)
    existing = session.scalar(select(func.count()).select_from(User)) or 0
    if existing and require_open_signup and not signup_enabled(session):
        raise UserError("Sign-up is closed. Ask an administrator to create your account.")
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise UserError("That username is taken.", "username")
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise UserError("That email address is already registered.", "email")
    user = User(
        username=name,
        email=address,
        password_hash=hasher.hash(password),
        is_admin=admin or existing == 0,
        is_active=True,
    )
    session.add(user)
    session.flush()
    seed_user_defaults(session, user)
    return user


def user_count(session: Session) -> int:
    """How many users exist (0 means the next sign-up becomes the administrator)."""
    return session.scalar(select(func.count()).select_from(User)) or 0


def _setting(session: Session, key: str) -> AppSetting | None:
    return session.scalar(select(AppSetting).where(AppSetting.key == key))


def signup_enabled(session: Session) -> bool:
    """Whether anyone may sign up (the administrator's switch; closed until it is set)."""
    row = _setting(session, SIGNUP_ENABLED)
    return row is not None and row.value == "1"


def set_signup_enabled(session: Session, enabled: bool) -> None:
    """Open or close sign-up (the caller commits)."""
    row = _setting(session, SIGNUP_ENABLED)
    if row is None:
        session.add(AppSetting(key=SIGNUP_ENABLED, value="1" if enabled else "0"))
    else:
        row.value = "1" if enabled else "0"


def find_user(session: Session, username: str) -> User | None:
    """The user with this username (compared normalised: case and surrounding space do not matter)."""
    return session.scalar(select(User).where(User.username == normalize_username(username)))


@dataclass(frozen=True, slots=True)
class LockPolicy:
    """When failed sign-ins lock a username: ``max_failures`` within ``window`` lock it for ``lockout``."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)


def locked_until(session: Session, user_id: int, now: datetime, policy: LockPolicy) -> datetime | None:
    """When the user's lock ends, or None when not locked.

    ``max_failures`` failed logins within ``window`` lock the user for ``lockout`` from the last of them.
    Failures before the last successful login, or already "spent" on an earlier lock, do not count.
    Attempts refused during a lock are logged as ``login_locked`` and do not extend it.
    """
    horizon = now - (policy.window + policy.lockout) * 4
    last_ok = session.scalar(
        select(func.max(ActivityLog.timestamp)).where(
            ActivityLog.user_id == user_id, ActivityLog.action == "login", ActivityLog.timestamp >= horizon
        )
    )
    since = max(horizon, last_ok) if last_ok else horizon
    times = session.scalars(
        select(ActivityLog.timestamp)
        .where(
            ActivityLog.user_id == user_id,
            ActivityLog.action == "login_failed",
            ActivityLog.timestamp > since,
            ActivityLog.timestamp <= now,
        )
        .order_by(ActivityLog.timestamp)
    ).all()
    window: list[datetime] = []
    until: datetime | None = None
    for at in times:
        if until is not None and at < until:
            continue
        window = [t for t in window if at - t < policy.window]
        window.append(at)
        if len(window) >= policy.max_failures:
            until = at + policy.lockout
            window = []
    if until is not None and now < until:
        return until
    return None


def change_password(session: Session, hasher: PasswordHasher, user: User, new_password: str) -> None:
    """Set a new password (policy-checked) and bump ``session_version`` to end other sessions.

    Raises :class:`UserError` when the password breaks the policy.
    """
    policy = check_password_policy(new_password, username=user.username, email=user.email)
    if not policy.ok:
        raise UserError(" ".join(policy.errors), "new_password")
    user.password_hash = hasher.hash(new_password)
    user.session_version = (user.session_version or 1) + 1
