"""Helpers for tests that commit calendar edits: the calendar's tables are reference data a PostgreSQL
test database keeps between tests (tests/schema.py), so such a test puts them back afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import delete, select, update

from algomirror.db.models import MarketHoliday, SpecialTradingSession
from algomirror.db.models.calendar import TradingHoursTemplate, TradingSession
from algomirror.db.session import Database

CALENDAR_TABLES = (MarketHoliday.__table__, SpecialTradingSession.__table__, TradingSession.__table__)


@contextmanager
def calendar_tables_restored(database: Database) -> Iterator[None]:
    """Snapshot the holiday, special-session and weekday-session rows; put exactly them back on exit."""
    templates = TradingHoursTemplate.__table__
    with database.session_factory() as s:
        saved = [(t, [dict(r._mapping) for r in s.execute(select(t))]) for t in CALENDAR_TABLES]
        saved_templates = [dict(r._mapping) for r in s.execute(select(templates))]
    try:
        yield
    finally:
        with database.session() as s:
            # Templates are updated in place (deleting one would cascade to its weekday rows).
            for row in saved_templates:
                s.execute(update(templates).where(templates.c.id == row["id"]).values(**row))
            for table, rows in saved:
                s.execute(delete(table))
                if rows:
                    s.execute(table.insert(), rows)
