"""Shared fixtures.

Database fixtures run every DB test on **both** SQLite and PostgreSQL (``db_url`` is parametrised).
Each pytest run creates its own PostgreSQL database (``am_test_<pid>_<hex>``) from the server given by
``ALGOMIRROR_TEST_PG_URL`` (default: the local trust-auth server), so concurrent runs never collide; the
schema is built once per run with ``alembic upgrade head`` and each test starts from empty tables.
PostgreSQL is not optional: if it cannot be reached the PostgreSQL half fails loudly.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from algomirror.db.session import Database
from tests import profile
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


# The production profile (tests/profile.py) refuses SQLite as production does: its half is skipped.
BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.skip(reason=profile.SQLITE_REFUSED))
    if profile.PRODUCTION
    else "sqlite",
    "postgresql",
]


@pytest.fixture(params=BACKENDS)
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


@pytest.fixture(params=BACKENDS)
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "development_only: tests development-mode behaviour; skipped in the production profile"
    )


E2E_DIR = Path(__file__).resolve().parent / "e2e"


def _longest_first(items: list[pytest.Item]) -> None:
    """Order the modules longest first, for ``--dist loadfile --no-loadscope-reorder`` (Makefile): the
    modules with ``slow`` tests (the chaos runs), then the browser tests (each a few slow tests), then the
    rest by test count. xdist's own order (by test count only) left the one-test browser modules of
    30-50 s each for the end, one worker running them while the other idled."""
    count = Counter(item.path for item in items)
    slow = {item.path for item in items if item.get_closest_marker("slow")}

    def weight(item: pytest.Item) -> tuple[int, int, str]:
        tier = 0 if item.path in slow else 1 if item.path.is_relative_to(E2E_DIR) else 2
        return (tier, -count[item.path], str(item.path))

    items.sort(key=weight)  # stable: a module's own tests keep their order


def _production_pass_runs(item: pytest.Item) -> bool:
    """Whether the production pass runs this development-pass test as it is: a PostgreSQL case of a
    module that reaches tests/profile.py, not about development mode (``ALGOMIRROR_TEST_PASSES=2``)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or item.get_closest_marker("development_only"):
        return False
    backend = callspec.params.get("db_url", callspec.params.get("empty_db_url"))
    return backend == "postgresql" and profile.reaches_profile(item.path)


def _deselect(config: pytest.Config, items: list[pytest.Item], drop: Callable[[pytest.Item], bool]) -> None:
    """Remove the items ``drop`` names from ``items`` in place, reported as deselected."""
    dropped = [item for item in items if drop(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not drop(item)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest modules first (:func:`_longest_first`). In the development pass of ``make test``'s two
    (``ALGOMIRROR_TEST_PASSES=2``): deselect what the production pass runs (:func:`_production_pass_runs`).
    In the production profile: deselect the tests of modules that never reach tests/profile.py (they
    would only repeat the development pass), skip ``development_only`` tests and the browser tests
    (tests/e2e), which drive the embedded SQLite demo, a development-mode installation by nature
    (production mode turns the demo off and refuses SQLite), so the development pass is where they run."""
    _longest_first(items)
    if not profile.PRODUCTION:
        if profile.TWO_PASSES:
            _deselect(config, items, _production_pass_runs)
        return
    _deselect(config, items, lambda item: not profile.reaches_profile(item.path))
    skip = pytest.mark.skip(reason="production profile: the test is about development mode")
    skip_e2e = pytest.mark.skip(reason=profile.E2E_DEVELOPMENT)
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(skip_e2e)
        elif item.get_closest_marker("development_only"):
            item.add_marker(skip)


__all__ = ["PG_ADMIN_URL", "REFERENCE_TABLES"]

# Fixtures that start the paper exchange in-process (owned by the simulator work).
pytest_plugins = ["tests.sim_fixtures"]
