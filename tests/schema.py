"""Building and cleaning test databases."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from algomirror.db.migrate import upgrade_url
from algomirror.db.models import Base

# Rows seeded by the migrations (calendar data); kept between tests.
REFERENCE_TABLES: frozenset[str] = frozenset(
    {
        "alembic_version",
        "trading_hours_templates",
        "trading_sessions",
        "market_holidays",
        "special_trading_sessions",
    }
)


def build_schema(url: str) -> None:
    upgrade_url(url, "head")


def truncate_all(url: str) -> None:
    """Empty every non-reference table of a PostgreSQL database (fast reset between tests).

    DELETE in foreign-key order plus a sequence reset: on a few-row test database this takes ~10 ms,
    where TRUNCATE (which rewrites every table and index file) took ~400 ms per test.
    """
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            present = {
                r[0]
                for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
                if r[0] not in REFERENCE_TABLES
            }
            ordered = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name in present]
            unknown = sorted(present - set(ordered))
            if unknown:
                quoted = ", ".join(f'"{n}"' for n in unknown)
                conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
            for name in ordered:
                conn.execute(text(f'DELETE FROM "{name}"'))
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence(t, 'id'), 1, false) "
                    "FROM unnest(CAST(:names AS text[])) AS t "
                    "WHERE pg_get_serial_sequence(t, 'id') IS NOT NULL"
                ),
                {"names": ordered},
            )
    finally:
        engine.dispose()
