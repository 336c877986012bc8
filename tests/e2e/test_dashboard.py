"""The embedded demo in a real browser: the dashboard shows the three demo accounts with numbers that
change without a reload (htmx polling of our database, filled by the engine's sync from the paper
exchange), and the positions page's account filter works."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Demo, sign_in_demo
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

DEMO_ACCOUNTS = ("Demo Alpha", "Demo Beta", "Demo Gamma")


def test_dashboard_when_demo_runs_shows_three_accounts_with_live_numbers(
    demo_server: Demo, browser_page: Any, artifacts_dir: Path
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    sign_in_demo(page, demo_server)
    page.goto(demo_server.url + "/")
    assert page.get_by_role("heading", name="Dashboard").is_visible()

    cards = page.locator(".account-card")
    eventually(lambda: cards.count() == 3, timeout=20, what="three account cards")
    names = [cards.nth(i).locator("h3").inner_text().strip() for i in range(3)]
    assert names == list(DEMO_ACCOUNTS)
    roles = [cards.nth(i).locator("[data-role]").inner_text().strip() for i in range(3)]
    assert roles == ["Primary", "Backup 1", "Backup 2"]

    # The engine's first sync fills funds; the fragment shows them without a reload.
    unrealised = page.locator('[data-total="m2m_unrealized"]')
    eventually(lambda: "₹" in unrealised.inner_text(), timeout=30, interval=0.25, what="funds synced")
    eventually(
        lambda: all("connected" in cards.nth(i).locator("[data-status]").inner_text() for i in range(3)),
        timeout=30,
        interval=0.25,
        what="all demo accounts connected",
    )
    first = unrealised.inner_text()
    stamp = page.evaluate("() => performance.timeOrigin")
    eventually(lambda: unrealised.inner_text() != first, timeout=45, interval=0.25, what="P&L changes")
    assert page.evaluate("() => performance.timeOrigin") == stamp, "the page must not have reloaded"
    page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)
    assert not problems, problems


def test_positions_when_account_filter_applied_shows_only_that_account(
    demo_server: Demo, browser_page: Any, artifacts_dir: Path
) -> None:
    page = browser_page
    sign_in_demo(page, demo_server)
    page.goto(demo_server.url + "/positions")
    rows = page.locator("#book-table tbody tr")
    eventually(lambda: rows.count() >= 12, timeout=45, interval=0.25, what="demo positions synced")
    all_accounts = {rows.nth(i).locator("td").first.inner_text().strip() for i in range(rows.count())}
    assert all_accounts == set(DEMO_ACCOUNTS)

    page.get_by_label("Account", exact=True).select_option(label="Demo Beta")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r".*/positions\?account=\d+"))
    rows = page.locator("#book-table tbody tr")
    eventually(lambda: rows.count() > 0, timeout=15, what="filtered rows")
    shown = {rows.nth(i).locator("td").first.inner_text().strip() for i in range(rows.count())}
    assert shown == {"Demo Beta"}
    subtotal_names = page.locator("#subtotals tbody th").all_inner_texts()
    assert [n.strip() for n in subtotal_names] == ["Demo Beta"]
    # The live fragment keeps the filter.
    live = page.locator("#book-live").get_attribute("hx-get") or ""
    assert "account=" in live
    page.screenshot(path=str(artifacts_dir / "positions-filtered.png"), full_page=True)


def test_orders_and_account_overview_when_demo_runs_render_without_errors(
    demo_server: Demo, browser_page: Any, artifacts_dir: Path
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    sign_in_demo(page, demo_server)
    page.goto(demo_server.url + "/orders")
    rows = page.locator("#book-table tbody tr")
    eventually(lambda: rows.count() >= 15, timeout=45, interval=0.25, what="demo orders synced")
    cancel_links = page.get_by_role("link", name="Cancel")
    assert cancel_links.count() >= 1  # the demo keeps resting orders open
    page.screenshot(path=str(artifacts_dir / "orders.png"), full_page=True)
    cancel_links.first.click()
    # Waits (with Playwright's deadline) for the confirmation page rather than racing its navigation.
    page.get_by_role("button", name="Yes, cancel this order").wait_for(state="visible", timeout=15_000)
    page.get_by_role("link", name="Keep it").click()
    page.wait_for_url(re.compile(r".*/orders$"))

    page.goto(demo_server.url + "/")
    page.get_by_role("link", name="Demo Beta").first.click()
    page.wait_for_url(re.compile(r".*/accounts/\d+/overview$"))
    assert page.get_by_role("heading", name="Connection history").is_visible()
    assert page.get_by_role("button", name="Test connection").is_visible()
    page.screenshot(path=str(artifacts_dir / "account-overview.png"), full_page=True)
    assert not problems, problems
