"""The engine's live trading calendar (PRODUCT §8: "jobs are rebuilt on every change", without a restart).

The engine holds ONE :class:`~algomirror.domain.calendar.TradingCalendar` that every component was given
(:func:`algomirror.engine.factory.build_engine`). This component looks at the calendar revision counter
(``app_settings.calendar_revision``, bumped by every calendar edit in the edit's transaction) every
``interval`` seconds; when it moved, it loads the calendar from the database and the shared instance
adopts it (one assignment, so a component never sees half an update). The scheduler re-plans every tick,
so entries, exits and square-offs follow the edit within one interval.

The database is read in a worker thread; the adoption happens on the event loop. A failed read or a
calendar the domain refuses is logged and the calendar in use is kept (tried again next interval).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import SQLAlchemyError

from algomirror.db.calendar_store import calendar_revision, load_calendar
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.engine.command_rows import pause

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0  # seconds between revision checks


def read_calendar(database: Database) -> tuple[int, TradingCalendar]:
    """(revision, calendar) as the database holds them. The revision is read first, so the calendar is
    at least that new (a writer bumps it in the same transaction as its change). Raises SQLAlchemyError
    or ValueError (rows the calendar cannot hold)."""
    with database.session_factory() as session:
        revision = calendar_revision(session)
        return revision, load_calendar(session)


def initial_calendar(database: Database) -> tuple[int | None, TradingCalendar]:
    """The engine's calendar at start: the database's, or :func:`default_calendar` (logged) when it
    cannot be read, with revision None so the refresh loads it as soon as it can."""
    try:
        return read_calendar(database)
    except (SQLAlchemyError, ValueError) as exc:
        log.error(
            "trading calendar: could not load it from the database, using the built-in one: %s", _line(exc)
        )
        return None, default_calendar()


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


class CalendarRefresh:
    """Engine component ``calendar_refresh``: keeps ``calendar`` (the engine's shared instance) equal to
    the database's. ``revision`` is the revision ``calendar`` was loaded at (None: unknown, load at the
    first check); ``interval`` the seconds between checks."""

    name = "calendar_refresh"

    def __init__(
        self,
        database: Database,
        calendar: TradingCalendar,
        *,
        revision: int | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.database = database
        self.calendar = calendar
        self.revision = revision
        self.interval = interval
        self.reloads = 0

    def _read_if_moved(self) -> tuple[int, TradingCalendar] | None:
        """(revision, calendar) when the stored revision differs from ours, else None (worker thread)."""
        with self.database.session_factory() as session:
            revision = calendar_revision(session)
            if revision == self.revision:
                return None
            return revision, load_calendar(session)

    async def check(self) -> bool:
        """One look: adopt the database's calendar when its revision moved. True when it was adopted.
        Raises SQLAlchemyError or ValueError (the calendar in use is kept)."""
        found = await asyncio.to_thread(self._read_if_moved)
        if found is None:
            return False
        revision, fresh = found
        previous, self.revision = self.revision, revision
        self.calendar.adopt(fresh)
        self.reloads += 1
        log.info(
            "trading calendar reloaded: revision %s -> %s (%d holidays, %d special sessions)",
            previous,
            revision,
            len(fresh.holidays()),
            len(fresh.special_sessions()),
        )
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``interval`` seconds until ``stop``."""
        while not stop.is_set():
            try:
                await self.check()
            except (SQLAlchemyError, ValueError) as exc:
                log.warning("trading calendar: reload failed, keeping the one in use: %s", _line(exc))
            await pause(stop, self.interval)


__all__ = ["DEFAULT_INTERVAL", "CalendarRefresh", "initial_calendar", "read_calendar"]
