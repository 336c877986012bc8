"""The calendar pages in a real browser on the running demo: reached from Settings by its tab row, the
import from a demo account's OpenAlgo (the paper exchange's ``market/holidays``) run by clicking, the
hours editor fitting a laptop and a phone without a sideways scroll. Screenshots land in
tests/e2e/artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Demo, signed_in_page

pytestmark = pytest.mark.e2e

OVERFLOW_JS = "() => document.documentElement.scrollWidth - window.innerWidth"


def test_calendar_reached_from_settings_and_openalgo_import_runs(
    demo_server: Demo, chromium: Any, artifacts_dir: Path
) -> None:
    page = signed_in_page(demo_server, chromium, 1280, 900)
    try:
        page.goto(demo_server.url + "/settings/")
        page.get_by_role("navigation", name="Settings pages").get_by_role("link", name="Calendar").click()
        page.wait_for_url("**/calendar/")
        assert page.get_by_role("heading", name="Trading calendar").is_visible()
        # The header's Settings link stays the current one on its sub-pages.
        current = page.locator('nav.mainnav a[aria-current="page"]')
        assert current.inner_text().strip() == "Settings"
        section = page.locator("#import-openalgo")
        section.get_by_label("Year").select_option("2026")
        section.get_by_role("button", name="Import").click()
        page.wait_for_url("**/calendar/?year=2026")
        flash = page.get_by_text("Imported 2026 from", exact=False).first
        flash.wait_for()
        # The demo database and the paper exchange hold the same 2026 list: everything is already there.
        assert "0 holiday row(s) added" in flash.inner_text() and "already present" in flash.inner_text()
        page.screenshot(path=str(artifacts_dir / "calendar-1280.png"), full_page=True)
        assert page.evaluate(OVERFLOW_JS) <= 0
    finally:
        page.context.close()


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_hours_editor_fits_without_a_sideways_scroll(
    demo_server: Demo, chromium: Any, artifacts_dir: Path, width: int, height: int
) -> None:
    page = signed_in_page(demo_server, chromium, width, height)
    try:
        page.goto(demo_server.url + "/calendar/hours")
        page.get_by_role("link", name="Edit equity hours").click()
        page.wait_for_url("**/calendar/hours/*")
        assert page.get_by_label("Monday open").input_value() == "09:15"
        page.screenshot(path=str(artifacts_dir / f"calendar-hours-{width}.png"), full_page=True)
        assert page.evaluate(OVERFLOW_JS) <= 0
    finally:
        page.context.close()
