"""Shared fixtures.

Database fixtures run every DB test on **both** SQLite and PostgreSQL (``db_url`` is parametrised).
Each pytest run creates its own PostgreSQL database (``am_test_<pid>_<hex>``) from the server given by
``ALGOMIRROR_TEST_PG_URL`` (default: the local trust-auth server), so concurrent runs never collide; the
schema is built once per run with ``alembic upgrade head`` and each test starts from empty tables.
PostgreSQL is not optional: if it cannot be reached the PostgreSQL half fails loudly.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from algomirror.db.session import Database
from tests.schema import PG_ADMIN_URL, REFERENCE_TABLES, build_schema, private_pg_database, truncate_all


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A private PostgreSQL database for this test run, with the schema migrated to head."""
    with private_pg_database("am_test") as url:
        build_schema(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for every test (cheaper than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    build_schema(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A clean, migrated database URL; every DB test runs once per backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "test.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
    else:
        url: str = request.getfixturevalue("pg_database_url")
        truncate_all(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new database with no tables (no migrations applied), on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with private_pg_database("am_empty") as url:
        yield url


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    with database.session_factory() as s:
        yield s


__all__ = ["PG_ADMIN_URL", "REFERENCE_TABLES"]

# Fixtures that start the paper exchange in-process (owned by the simulator work).
pytest_plugins = ["tests.sim_fixtures"]
