"""User rules without Flask: creation (first user = admin), sign-up switch, lock-out (per user and
address, and per address), password change.

Used by the auth views and by ``algomirror user …``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, delete, func, select, text
from sqlalchemy.orm import Session

from algomirror.db.defaults import seed_user_defaults
from algomirror.db.models import ActivityLog, User
from algomirror.db.models.app_settings import SIGNUP_ENABLED, AppSetting
from algomirror.security import check_password_policy, check_username, normalize_username
from algomirror.web.auth import sessions

EMAIL_MAX = 120


class UserError(Exception):
    """A user-facing problem with the input; ``field`` names the form field it belongs to."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.problems: dict[str, list[str]] = {field: [message]} if field else {}

    @classmethod
    def of(cls, problems: dict[str, list[str]]) -> UserError:
        """One error carrying every field's problems (``problems``: field name -> messages, not empty);
        its message is all of them, for callers without a form (the CLI)."""
        messages = [m for msgs in problems.values() for m in msgs]
        error = cls(" ".join(messages), next(iter(problems)) if len(problems) == 1 else None)
        error.problems = {name: list(msgs) for name, msgs in problems.items()}
        return error


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


def new_user_problems(username: str, email: str, password: str) -> dict[str, list[str]]:
    """Every problem with a new user's input, by field (``username``, ``email``, ``password``); empty
    when all are acceptable. Each field is checked even when another one fails, so a form can show all
    of its errors in one reply."""
    problems: dict[str, list[str]] = {}
    name = normalize_username(username)
    problem = check_username(name)
    if problem:
        problems["username"] = [problem]
    try:
        address = normalize_email(email)
    except UserError as exc:
        problems["email"] = [str(exc)]
        address = email.strip().lower()
    policy = check_password_policy(password, username=name, email=address)
    if not policy.ok:
        problems["password"] = [" ".join(policy.errors)]
    return problems


def validate_new_user(username: str, email: str, password: str) -> tuple[str, str]:
    """Normalised (username, email). Raises :class:`UserError` carrying every problem found
    (:attr:`UserError.problems`, by field)."""
    problems = new_user_problems(username, email, password)
    if problems:
        raise UserError.of(problems)
    return normalize_username(username), normalize_email(email)


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
    taken: dict[str, list[str]] = {}
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        taken["username"] = ["That username is taken."]
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        taken["email"] = ["That email address is already registered."]
    if taken:
        raise UserError.of(taken)
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
    """When failed sign-ins pause sign-in: ``max_failures`` for one user from one address within
    ``window`` lock that user *from that address* for ``lockout``; ``address_max_failures`` from one
    address within ``window``, over every username (unknown ones included), lock that address for
    ``lockout``. Failures from elsewhere never lock the owner out of their own address."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)
    address_max_failures: int = 20


# Refused sign-ins, as the activity log names them.
FAILED_SIGN_INS = ("login_failed", "login_locked", "login_throttled")


def _same_address(ip_address: str | None) -> ColumnElement[bool]:
    if ip_address is None:
        return ActivityLog.ip_address.is_(None)
    return ActivityLog.ip_address == ip_address


def _lock_end(
    times: Sequence[datetime], now: datetime, max_failures: int, policy: LockPolicy
) -> datetime | None:
    """When a lock built from failure ``times`` (ascending) ends, or None when not locked at ``now``.
    Failures during a lock do not count (they are "spent"), so a lock is never extended by them."""
    window: list[datetime] = []
    until: datetime | None = None
    for at in times:
        if until is not None and at < until:
            continue
        window = [t for t in window if at - t < policy.window]
        window.append(at)
        if len(window) >= max_failures:
            until = at + policy.lockout
            window = []
    if until is not None and now < until:
        return until
    return None


def _horizon(now: datetime, policy: LockPolicy) -> datetime:
    return now - (policy.window + policy.lockout) * 4


def locked_until(
    session: Session, user_id: int, ip_address: str | None, now: datetime, policy: LockPolicy
) -> datetime | None:
    """When the lock of user ``user_id`` from address ``ip_address`` ends, or None when not locked.

    Counted from the activity log, so every web process sees the same lock. ``max_failures`` failed
    sign-ins of this user from this address within ``window`` lock it for ``lockout`` from the last of
    them. Failures before the last successful sign-in from this address, or spent on an earlier lock,
    do not count; attempts refused during a lock are logged as ``login_locked`` and do not extend it.
    """
    horizon = _horizon(now, policy)
    last_ok = session.scalar(
        select(func.max(ActivityLog.timestamp)).where(
            ActivityLog.user_id == user_id,
            ActivityLog.action == "login",
            _same_address(ip_address),
            ActivityLog.timestamp >= horizon,
        )
    )
    since = max(horizon, last_ok) if last_ok else horizon
    times = session.scalars(
        select(ActivityLog.timestamp)
        .where(
            ActivityLog.user_id == user_id,
            ActivityLog.action == "login_failed",
            _same_address(ip_address),
            ActivityLog.timestamp > since,
            ActivityLog.timestamp <= now,
        )
        .order_by(ActivityLog.timestamp)
    ).all()
    return _lock_end(times, now, policy.max_failures, policy)


def address_locked_until(
    session: Session, ip_address: str | None, now: datetime, policy: LockPolicy
) -> datetime | None:
    """When the sign-in throttle of address ``ip_address`` ends, or None when it is not throttled:
    ``address_max_failures`` refused sign-ins from it within ``window``, whatever the usernames,
    throttle it for ``lockout`` (a successful sign-in does not reset it).

    Every refusal counts — a wrong password, an unknown username, one refused by a user's lock — so
    the throttle fills at the same pace whether the names tried exist or not (counting only wrong
    passwords let an attacker tell an existing user, whose tries turn into lock refusals, from an
    unknown one). The throttle's own refusals (``login_throttled``) do not extend it."""
    times = session.scalars(
        select(ActivityLog.timestamp)
        .where(
            _same_address(ip_address),
            ActivityLog.action.in_(("login_failed", "login_locked")),
            ActivityLog.timestamp > _horizon(now, policy),
            ActivityLog.timestamp <= now,
        )
        .order_by(ActivityLog.timestamp)
    ).all()
    return _lock_end(times, now, policy.address_max_failures, policy)


@dataclass(frozen=True, slots=True)
class FailedSignIns:
    """Refused sign-ins of one user: how many, and from which addresses (first seen first)."""

    count: int
    addresses: tuple[str, ...]


def failed_sign_ins_since(session: Session, user_id: int, since: datetime | None) -> FailedSignIns:
    """The user's refused sign-ins (wrong password, or refused during a lock) after ``since`` (all of
    them when None), for telling the owner at their next successful sign-in."""
    query = select(ActivityLog.ip_address).where(
        ActivityLog.user_id == user_id, ActivityLog.action.in_(FAILED_SIGN_INS)
    )
    if since is not None:
        query = query.where(ActivityLog.timestamp > since)
    addresses = session.scalars(query.order_by(ActivityLog.timestamp, ActivityLog.id)).all()
    distinct = tuple(dict.fromkeys(address or "unknown address" for address in addresses))
    return FailedSignIns(count=len(addresses), addresses=distinct)


def change_password(
    session: Session,
    hasher: PasswordHasher,
    user: User,
    new_password: str,
    *,
    keep_session: str | None = None,
) -> None:
    """Set a new password (policy-checked), end every session of the user but the one holding the
    token ``keep_session`` (all of them when None), and bump ``session_version`` (the caller commits).

    Raises :class:`UserError` when the password breaks the policy.
    """
    policy = check_password_policy(new_password, username=user.username, email=user.email)
    if not policy.ok:
        raise UserError(" ".join(policy.errors), "new_password")
    user.password_hash = hasher.hash(new_password)
    user.session_version = (user.session_version or 1) + 1
    sessions.end_user_sessions(session, user.id, keep_token=keep_session)
