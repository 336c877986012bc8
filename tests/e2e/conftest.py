"""Browser-test fixtures: the real app served by waitress on a loopback port, and Debian's chromium.

Chromium missing: with ``CI`` set the tests fail (the browser test is part of the gate), otherwise they
are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from algomirror.config import load_settings
from algomirror.db.migrate import upgrade_url
from algomirror.db.session import Database
from algomirror.security import make_password_hasher
from algomirror.web import create_app

CHROMIUM = os.environ.get("ALGOMIRROR_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        message = (
            f"chromium not found at {CHROMIUM}: install it with `apt-get install chromium` (make test does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite database, migrated, served by waitress in a background thread. Yields the base URL."""
    from waitress.server import create_server

    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    upgrade_url(url, "head")
    settings = load_settings(instance_dir=tmp_path / "instance", database_url=url, demo=False)
    database = Database(url, settings)
    app = create_app(settings, database=database)
    # Cheap argon2 for speed; everything else is the production configuration.
    app.extensions["algomirror"].hasher = make_password_hasher(cheap=True)
    server: Any = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=10)
        database.dispose()


@pytest.fixture
def browser_page(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
            context.close()
        finally:
            browser.close()


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
