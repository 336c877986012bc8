"""The web's trading calendar: the database's, cached per process and reloaded when its revision moves.

Pages that judge market hours or expiries (the header's market status, the dashboard, the premium
chart, the calendar page) ask :func:`web_calendar`. The calendar revision (bumped by every calendar edit
in the edit's transaction) is looked at no more than once per :data:`CHECK_SECONDS`, so an edit shows on
the next page after at most that long, and an ordinary page costs no query at all most of the time.
"""

from __future__ import annotations

import logging
import threading
import time as _time
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.db.calendar_store import calendar_revision, load_calendar
from algomirror.domain.calendar import TradingCalendar, default_calendar

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
_EXTENSION = "algomirror_calendar"


@dataclass
class CalendarCache:
    """One process's calendar (``calendar``) loaded at ``revision`` (None: never loaded)."""

    calendar: TradingCalendar = field(default_factory=default_calendar)
    revision: int | None = None
    checked_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self, session: Session, *, force: bool = False) -> TradingCalendar:
        """The calendar, reloaded from ``session``'s database when the stored revision moved (looked at
        once per :data:`CHECK_SECONDS`, or now with ``force``). A failed read keeps the one in use
        (logged; the built-in calendar before the first successful load)."""
        monotonic = _time.monotonic()
        with self.lock:
            if not force and monotonic - self.checked_at < CHECK_SECONDS:
                return self.calendar
            self.checked_at = monotonic
            try:
                revision = calendar_revision(session)
                if revision != self.revision:
                    self.calendar.adopt(load_calendar(session))
                    self.revision = revision
            except (SQLAlchemyError, ValueError) as exc:
                log.warning("trading calendar: could not reload it, keeping the one in use: %s", exc)
            return self.calendar


def web_calendar(*, force: bool = False) -> TradingCalendar:
    """The current app's trading calendar (needs an app context; reads with the request's session)."""
    from algomirror.web.context import db

    cache = current_app.extensions.get(_EXTENSION)
    if cache is None:
        cache = current_app.extensions.setdefault(_EXTENSION, CalendarCache())
    assert isinstance(cache, CalendarCache)
    return cache.current(db(), force=force)


__all__ = ["CHECK_SECONDS", "CalendarCache", "web_calendar"]
