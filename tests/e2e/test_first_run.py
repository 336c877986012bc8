"""First run in a real browser: create the administrator, sign in, add an account, see the masked key,
sign out. Also checks that the page runs under the strict CSP without console errors."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

PASSWORD = "first-run-passphrase-2026"
API_KEY = "E2E-SECRET-openalgo-key-7788"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_first_run_when_admin_registers_and_adds_account_sees_masked_key(
    live_server: str, browser_page: Any, artifacts_dir: Path
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    page.goto(live_server + "/")
    assert page.get_by_role("heading", name="Create the administrator").is_visible()
    page.get_by_label("Username").fill("Admin")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat password").fill(PASSWORD)
    page.get_by_role("button", name="Create administrator").click()

    page.wait_for_url(re.compile(r".*/login$"))
    assert page.get_by_text("Account created").is_visible()
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # Signed in: the start page (the dashboard, or "add an account" while there is none).
    page.wait_for_url(lambda url: "/login" not in url)
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Admin").is_visible()
    nav.get_by_role("link", name="Accounts").click()
    page.wait_for_url(re.compile(r".*/accounts/$"))
    page.get_by_role("link", name="Add account").click()
    page.get_by_label("Account name").fill("Browser account")
    page.get_by_label("Broker").select_option("zerodha")
    page.get_by_label("OpenAlgo host URL").fill(f"http://127.0.0.1:{_closed_port()}")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Save").click()
    # No server there: the failed test asks for an explicit "save anyway", the typed key still in place.
    page.get_by_label("Save anyway, although the connection test failed").check()
    assert page.get_by_label("API key").input_value() == API_KEY
    page.get_by_role("button", name="Save").click()

    page.wait_for_url(re.compile(r".*/accounts/$"))
    assert page.get_by_text("saved as disconnected").is_visible()
    row = page.get_by_role("row", name=re.compile("Browser account"))
    assert row.get_by_text("••••" + API_KEY[-4:]).is_visible()
    assert API_KEY not in page.content()
    page.screenshot(path=str(artifacts_dir / "first_run_accounts.png"), full_page=True)

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login$"))
    assert page.get_by_text("You are signed out").is_visible()
    page.goto(live_server + "/accounts/")
    assert page.url.startswith(live_server + "/login")

    # The vendored scripts load and run under the CSP (no blocked inline code, no errors).
    assert page.evaluate("typeof window.htmx") == "object"
    assert page.evaluate("typeof window.Alpine") == "object"
    assert problems == []
