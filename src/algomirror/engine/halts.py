"""The durable "entries halted" flag: an ``app_settings`` row (``engine_entries_halted``) whose value is
the reason. While it exists the execution engine must place no entry (exits, sync and risk go on), and
the web shows an alert to every signed-in user. It survives restarts on purpose: only an operator who has
looked at the cause clears it (:func:`resume_entries`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from algomirror.db.models import ActivityLog, TradingAccount
from algomirror.db.models.app_settings import ENGINE_ENTRIES_HALTED, AppSetting
from algomirror.domain.timeutil import ensure_aware

COMPONENT_FAILED_ACTION = "engine_component_failed"
ENTRIES_RESUMED_ACTION = "engine_entries_resumed"
# app_settings.value is TEXT, but the banner shows it: keep it to a readable length.
_MAX_REASON = 1000


def entries_halted(session: Session) -> str | None:
    """The reason entries are halted, or None when they are not. The execution engine calls this before
    every entry and refuses the entry when it returns a reason."""
    return session.scalar(select(AppSetting.value).where(AppSetting.key == ENGINE_ENTRIES_HALTED))


def halt_entries(session: Session, reason: str, now: datetime) -> None:
    """Set the flag (the caller commits). A second reason is appended to the first, so the banner names
    every cause until an operator clears it. ``now`` is aware (stored UTC)."""
    at = ensure_aware(now)
    row = session.scalar(select(AppSetting).where(AppSetting.key == ENGINE_ENTRIES_HALTED))
    if row is None:
        session.add(
            AppSetting(key=ENGINE_ENTRIES_HALTED, value=reason[:_MAX_REASON], created_at=at, updated_at=at)
        )
        return
    if reason not in row.value:
        row.value = f"{row.value}; {reason}"[:_MAX_REASON]
    row.updated_at = at


def record_component_failure(session: Session, *, component: str, reason: str, now: datetime) -> None:
    """Escalate a component that keeps crashing: an ``engine_component_failed`` activity row and the
    entries-halted flag (the caller commits). ``now`` is aware (stored UTC)."""
    at = ensure_aware(now)
    session.add(
        ActivityLog(action=COMPONENT_FAILED_ACTION, details=f"{component}: {reason}"[:2000], timestamp=at)
    )
    halt_entries(session, reason, at)


def resume_entries(session: Session, *, user_id: int | None, now: datetime) -> bool:
    """Clear the flag (the caller commits); True when it was set. Logged as ``engine_entries_resumed``
    with the reason that was cleared."""
    reason = entries_halted(session)
    if reason is None:
        return False
    session.execute(delete(AppSetting).where(AppSetting.key == ENGINE_ENTRIES_HALTED))
    session.add(
        ActivityLog(
            user_id=user_id,
            action=ENTRIES_RESUMED_ACTION,
            details=f"cleared: {reason}"[:2000],
            timestamp=ensure_aware(now),
        )
    )
    return True


ACCOUNT_HALTED_ACTION = "account_entries_halted"
ACCOUNT_RESUMED_ACTION = "account_entries_resumed"


def account_entries_halted(session: Session, account_id: int) -> str | None:
    """Why new entries are halted on one account (reconciliation or an operator), or None. The entry
    path refuses an entry on such an account; exits go on."""
    return session.scalar(select(TradingAccount.entries_halted_reason).where(TradingAccount.id == account_id))


def halt_account_entries(session: Session, account_id: int, reason: str, now: datetime) -> bool:
    """Halt new entries on one account (the caller commits). A second reason is appended, as for the
    global flag. True when the account was not halted before; logged as ``account_entries_halted``."""
    at = ensure_aware(now)
    account = session.get(TradingAccount, account_id)
    if account is None:
        raise LookupError(f"no trading account {account_id}")
    current = account.entries_halted_reason
    first = current is None
    if current is None:
        account.entries_halted_reason = reason[:_MAX_REASON]
        account.entries_halted_at = at
    elif reason not in current:
        account.entries_halted_reason = f"{current}; {reason}"[:_MAX_REASON]
    if first:
        session.add(
            ActivityLog(
                user_id=account.user_id,
                action=ACCOUNT_HALTED_ACTION,
                details=f"{account.account_name}: {reason}"[:2000],
                timestamp=at,
            )
        )
    return first


def resume_account_entries(session: Session, account_id: int, *, user_id: int, now: datetime) -> bool:
    """Clear one account's entry halt (the caller commits); True when it was set. Only the account's own
    user may clear it (another user's account acts as missing: False)."""
    account = session.get(TradingAccount, account_id)
    if account is None or account.user_id != user_id or account.entries_halted_reason is None:
        return False
    reason = account.entries_halted_reason
    account.entries_halted_reason = None
    account.entries_halted_at = None
    session.add(
        ActivityLog(
            user_id=user_id,
            action=ACCOUNT_RESUMED_ACTION,
            details=f"{account.account_name}: cleared: {reason}"[:2000],
            timestamp=ensure_aware(now),
        )
    )
    return True


__all__ = [
    "ACCOUNT_HALTED_ACTION",
    "ACCOUNT_RESUMED_ACTION",
    "COMPONENT_FAILED_ACTION",
    "ENTRIES_RESUMED_ACTION",
    "account_entries_halted",
    "entries_halted",
    "halt_account_entries",
    "halt_entries",
    "record_component_failure",
    "resume_account_entries",
    "resume_entries",
]
