"""The engine's live calendar (engine/calendar_refresh): one shared instance that every component holds,
adopting the database's calendar when its revision moves, so a holiday added on the calendar page reaches
a running engine's scheduler without a restart (PRODUCT §8)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date, time

import pytest
from sqlalchemy import select

from algomirror.db.calendar_edits import save_holiday
from algomirror.db.calendar_store import bump_calendar_revision
from algomirror.db.models import MarketHoliday
from algomirror.db.models.calendar import TradingHoursTemplate, TradingSession
from algomirror.db.session import Database
from algomirror.engine.calendar_refresh import CalendarRefresh, initial_calendar
from algomirror.engine.scheduler import Scheduler
from tests.integration.calendar_support import calendar_tables_restored
from tests.integration.feed_support import until

NEW_HOLIDAY = date(2026, 12, 30)  # a Wednesday, a trading day in the seeds


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    with calendar_tables_restored(db):
        yield db
    db.dispose()


def _add_holiday(database: Database, day: date) -> None:
    with database.session() as s:
        save_holiday(s, day, "Added while running", ["NSE", "NFO"])


async def test_running_refresh_adopts_a_holiday_into_the_shared_calendar(database: Database) -> None:
    revision, calendar = initial_calendar(database)
    scheduler = Scheduler(database, calendar=calendar)
    assert not calendar.is_holiday("NFO", NEW_HOLIDAY) and scheduler.calendar is calendar
    refresh = CalendarRefresh(database, calendar, revision=revision, interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(refresh.run(stop))
    try:
        await asyncio.to_thread(_add_holiday, database, NEW_HOLIDAY)
        await until(
            lambda: calendar.is_holiday("NFO", NEW_HOLIDAY), "the holiday in the shared calendar", timeout=10
        )
        # The scheduler holds the same instance: it plans with the new holiday at its next tick.
        assert not scheduler.calendar.is_trading_day("NFO", NEW_HOLIDAY)
        assert refresh.reloads == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_check_without_a_change_reads_nothing_new(database: Database) -> None:
    revision, calendar = initial_calendar(database)
    refresh = CalendarRefresh(database, calendar, revision=revision)
    snapshot = calendar.snapshot
    assert await refresh.check() is False
    assert calendar.snapshot is snapshot


async def test_a_bad_row_is_left_out_and_the_rest_still_adopted(database: Database) -> None:
    revision, calendar = initial_calendar(database)
    refresh = CalendarRefresh(database, calendar, revision=revision)
    with database.session() as s:
        s.add(MarketHoliday(date=NEW_HOLIDAY, name="Adopted", market="NSE"))
        # A row the calendar cannot hold: Monday's pre-open running past that day's 09:15 open.
        monday = s.scalar(
            select(TradingSession)
            .join(TradingHoursTemplate, TradingHoursTemplate.id == TradingSession.template_id)
            .where(TradingHoursTemplate.name == "equity", TradingSession.day_of_week == 0)
        )
        assert monday is not None
        monday.pre_market_start, monday.pre_market_end = time(9, 0), time(9, 30)
        bump_calendar_revision(s)
    assert await refresh.check() is True
    assert calendar.is_holiday("NSE", NEW_HOLIDAY)
    assert calendar.pre_open("NSE", date(2026, 12, 28)) is None  # Monday: the bad window left out
    assert calendar.pre_open("NSE", date(2026, 12, 29)) is not None
