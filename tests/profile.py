"""The test profile: ``ALGOMIRROR_TEST_PROFILE=production`` runs the suite as a production installation.

``make test`` runs the suite twice: the default ("development") profile, then this one. In production:

* the database fixtures (``db_url``, ``empty_db_url``) give PostgreSQL only: production refuses SQLite,
  so their SQLite half is skipped with that reason (pass 1 ran it);
* the settings the test helpers build (:func:`tests.integration.web_support.make_env`) are production
  settings: ``env="production"``, a Redis URL, explicit secret and Fernet keys, so every app goes
  through ``production_problems()`` and uses Redis for its rate limits and its live-update bus;
* a test pinned to SQLite by its own parametrisation runs there with ``allow_sqlite`` (it tests SQLite);
* a test of development behaviour itself (rate limits counted in memory without a Redis URL) is marked
  ``@pytest.mark.development_only`` and skipped here; a test whose expectation merely differs by mode
  asserts each mode's value (``PRODUCTION``) or sets the setting it is about explicitly;
* child processes the helpers start (engine subprocesses, the CLI commands of test_engine_cli and
  test_web_cli) get the same variables (:func:`child_env`);
* the browser tests (tests/e2e) are skipped: they drive the embedded SQLite demo, which production
  mode turns off and refuses, so they would only repeat the development pass;
* a test module that never reaches this module through its imports (:func:`reaches_profile`: the unit
  tests, the paper exchange's own tests, tests that build their own settings) is deselected: nothing in
  it can differ from its PostgreSQL half in the development pass, so it would only repeat it.

``make test`` sets ``ALGOMIRROR_TEST_PASSES=2`` for both passes. The development pass then leaves the
PostgreSQL half of the tests that reach this module (except ``development_only`` ones) to the production
pass, which runs exactly that half, in production mode: each such test still runs on both databases,
SQLite in development mode and PostgreSQL in production mode, once each (CI's 20 minutes do not hold
the suite three times). Without the variable (a developer's ``pytest``) every test runs on both.

Redis isolation: every xdist worker uses its own Redis database number (pub/sub is not per database,
so each app's bus also gets its own channel prefix, and each app its own rate-limit key prefix). A
test that names its own Redis URL keeps the app's default prefixes: it is about Redis and its sharing.
"""

from __future__ import annotations

import ast
import functools
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

PROFILE = os.environ.get("ALGOMIRROR_TEST_PROFILE", "development").strip().lower() or "development"
if PROFILE not in {"development", "production"}:
    raise RuntimeError(f"ALGOMIRROR_TEST_PROFILE must be development or production, not {PROFILE!r}")
PRODUCTION = PROFILE == "production"
# The two passes of `make test` (see the module docstring): the PostgreSQL half of the tests that reach
# this module runs in the production pass only.
TWO_PASSES = os.environ.get("ALGOMIRROR_TEST_PASSES", "1").strip() == "2"

# Redis server of the production profile; tests of Redis itself use databases 13 and 15.
REDIS_BASE = os.environ.get("ALGOMIRROR_TEST_REDIS_URL", "redis://127.0.0.1:6379")
SQLITE_REFUSED = "production profile: production mode refuses SQLite (the development pass runs it)"
E2E_DEVELOPMENT = (
    "production profile: the browser tests drive the embedded SQLite demo, which production mode "
    "refuses (the development pass runs them)"
)

# Fixed per test process: an engine subprocess must decrypt what the test's app encrypted.
SECRET_KEY = secrets.token_urlsafe(32)
FERNET_KEY = Fernet.generate_key().decode()


def redis_url() -> str:
    """This worker's Redis database (gw0 -> 1, gw1 -> 2, ...; never 0, 13 or 15)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    number = 1 + (int(worker) if worker.isdigit() else 0) % 10
    return f"{REDIS_BASE}/{number}"


def unique_prefix() -> str:
    """A Redis key/channel prefix no other app of this run shares."""
    return f"amtest:{os.getpid()}:{secrets.token_hex(4)}:"


def settings_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` plus, in the production profile, what a production installation must set (a
    test's own values win)."""
    if not PRODUCTION:
        return overrides
    # A test pinned to SQLite (its own parametrisation) tests SQLite itself: allowed explicitly.
    sqlite = str(overrides.get("database_url", "")).startswith("sqlite")
    return {
        "env": "production",
        "allow_sqlite": sqlite,
        "redis_url": redis_url(),
        "secret_key": SECRET_KEY,
        "fernet_key": FERNET_KEY,
        **overrides,
    }


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` (a child process's environment) plus, in the production profile, the production variables
    the child does not set itself."""
    if not PRODUCTION:
        return env
    extra = {
        "ALGOMIRROR_ENV": "production",
        "ALGOMIRROR_REDIS_URL": redis_url(),
        "ALGOMIRROR_SECRET_KEY": SECRET_KEY,
        "ALGOMIRROR_FERNET_KEY": FERNET_KEY,
    }
    if env.get("ALGOMIRROR_DATABASE_URL", "").startswith("sqlite"):
        extra["ALGOMIRROR_ALLOW_SQLITE"] = "1"
    return {**extra, **env}


TESTS_DIR = Path(__file__).resolve().parent
_THIS = Path(__file__).resolve()


def _local_imports(path: Path) -> set[Path]:
    """The files of the ``tests`` package that ``path`` imports (``import tests.x``, ``from tests.x import
    y``, ``from tests import x``)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "tests":
                continue
            base = TESTS_DIR.joinpath(*parts[1:])
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    found.add(candidate.resolve())
    return found


@functools.cache
def reaches_profile(path: Path) -> bool:
    """Whether the test file ``path`` imports this module, directly or through the test helpers it
    imports: only such a test can behave differently in the production profile."""
    seen: set[Path] = set()
    todo = [path.resolve()]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        imported = _local_imports(current)
        if _THIS in imported:
            return True
        todo.extend(imported - seen)
    return False
