"""The trading calendar in the database: load it into the pure :class:`TradingCalendar`, and the revision
counter every change bumps so running processes reload without a restart (PRODUCT §8).

Writers (the calendar pages, the holiday import) change the rows and call :func:`bump_calendar_revision`
in the same transaction. Readers compare :func:`calendar_revision` with the revision they loaded.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.models.app_settings import CALENDAR_REVISION, AppSetting
from algomirror.domain.calendar import TradingCalendar, default_calendar


def calendar_revision(session: Session) -> int:
    """The stored revision (0 when the calendar was never edited). Raises only SQLAlchemyError."""
    value = session.scalar(select(AppSetting.value).where(AppSetting.key == CALENDAR_REVISION))
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def bump_calendar_revision(session: Session) -> int:
    """Move the revision on by one (the caller commits, with the calendar change) and return it."""
    row = session.scalar(select(AppSetting).where(AppSetting.key == CALENDAR_REVISION).with_for_update())
    if row is None:
        session.add(AppSetting(key=CALENDAR_REVISION, value="1"))
        return 1
    try:
        current = int(row.value)
    except ValueError:
        current = 0
    row.value = str(current + 1)
    return current + 1


def load_calendar(session: Session) -> TradingCalendar:
    """The calendar the database holds (templates, weekday sessions, holidays, special sessions)."""
    # Placeholder until the loader lands: the built-in lists.
    del session
    return default_calendar()


__all__ = ["bump_calendar_revision", "calendar_revision", "load_calendar"]
