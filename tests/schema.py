"""Building and cleaning test databases."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from algomirror.db.migrate import upgrade_url

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
    """Empty every non-reference table of a PostgreSQL database (fast reset between tests)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            names = [
                r[0]
                for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
                if r[0] not in REFERENCE_TABLES
            ]
            if names:
                quoted = ", ".join(f'"{n}"' for n in names)
                conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
