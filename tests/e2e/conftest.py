"""Browser-test fixtures: the real app served by waitress on a loopback port, and Debian's chromium.

Chromium missing: with ``CI`` set the tests fail (the browser test is part of the gate), otherwise they
are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from algomirror.config import Settings, load_settings
from algomirror.db.migrate import upgrade_url
from algomirror.db.session import Database
from algomirror.embedded import start_embedded
from algomirror.live import LiveBus, build_bus
from algomirror.security import make_password_hasher
from algomirror.web import create_app
from tests.integration.web_support import unused_port

CHROMIUM = os.environ.get("ALGOMIRROR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
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
            args=CHROMIUM_ARGS,
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


@dataclass
class Demo:
    """A running demo: the web app's base ``url``, its ``settings``, ``database`` and the live ``bus`` the
    engine and the web app share."""

    url: str
    settings: Settings
    database: Database
    bus: LiveBus | None = None


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """Paper exchange + demo seeding + engine sync (start_embedded) + the web app on waitress, all on
    ephemeral loopback ports, SQLite in tmp; the web reads the exchange's market clock as ``make run``
    does. One per test module (the tests of a module must leave it as they found it)."""
    from waitress.server import create_server

    tmp_path = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    upgrade_url(url, "head")
    settings = load_settings(
        instance_dir=tmp_path / "instance",
        database_url=url,
        demo=True,
        demo_sim_port=unused_port(),
        demo_sim_ws_port=unused_port(),
        demo_clock_speed=30.0,
        sync_interval_market=1.0,
        sync_interval_closed=1.0,
        # A module's tests sign in many times a minute from one address.
        ratelimit_auth="1000 per minute",
    )
    database = Database(url, settings)
    # One live bus for the engine and the web app, as `make run`'s runner does: the engine's risk
    # snapshots and alerts reach the pages' SSE streams.
    bus = build_bus(settings)
    # No move to the next session while a module runs (at 30x a session lasts about 12 minutes).
    services = start_embedded(settings, database, wrap_check_seconds=3600, bus=bus)
    server: Any = None
    thread: threading.Thread | None = None
    try:
        app = create_app(settings, database=database, bus=bus)
        app.extensions["algomirror"].market_clock = services.market_clock
        # Each open SSE stream holds a server thread: keep some for the pages (as the runner does), and
        # let waitress notice a closed tab at once (channel_request_lookahead) so its stream ends.
        app.config["LIVE_MAX_STREAMS"] = 8
        server = create_server(app, host="127.0.0.1", port=0, threads=12, channel_request_lookahead=1)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        yield Demo(f"http://127.0.0.1:{server.effective_port}", settings, database, bus)
    finally:
        if server is not None:
            server.close()
        if thread is not None:
            thread.join(timeout=10)
        services.stop()
        bus.close()
        database.dispose()


def sign_in_demo(page: Any, demo: Demo) -> None:
    """Sign in as the demo user through the form."""
    page.goto(demo.url + "/login")
    page.get_by_label("Username").fill(demo.settings.demo_username)
    page.get_by_label("Password").fill(demo.settings.demo_password.get_secret_value())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda u: "/login" not in u)


@pytest.fixture(scope="module")
def chromium(chromium_path: str) -> Iterator[Any]:
    """One chromium per test module; tests open their own contexts (viewport, colour scheme)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def signed_in_page(demo: Demo, chromium: Any, width: int, height: int) -> Any:
    """A new browser context of ``width`` × ``height`` px with one page signed in to ``demo`` (15 s
    default timeout); close it with ``page.context.close()``."""
    context = chromium.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in_demo(page, demo)
    return page
