"""The durable "entries halted" flag: an ``app_settings`` row (``engine_entries_halted``) whose value is
the reason. While it exists the execution engine must place no entry (exits, sync and risk go on), and
the web shows an alert to every signed-in user. It survives restarts on purpose: only an operator who has
looked at the cause clears it (:func:`resume_entries`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from algomirror.db.models import ActivityLog
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


__all__ = [
    "COMPONENT_FAILED_ACTION",
    "ENTRIES_RESUMED_ACTION",
    "entries_halted",
    "halt_entries",
    "record_component_failure",
    "resume_entries",
]
