"""Sign-out in a real browser after ticking "Remember me" (issue 9, finding 1): the browser lands on the
sign-in page and stays signed out on reload and on a protected page; the remember-me cookie is gone."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

PASSWORD = "sign-out-passphrase-2026"


def _register_admin(page: Any, base: str) -> None:
    page.goto(base + "/")
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat password").fill(PASSWORD)
    page.get_by_role("button", name="Create administrator").click()
    page.wait_for_url(re.compile(r".*/login$"))


def test_sign_out_when_remember_me_was_ticked_lands_on_sign_in_and_stays_signed_out(
    live_server: str, browser_page: Any
) -> None:
    page = browser_page
    _register_admin(page, live_server)
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label(re.compile("Remember me")).check()
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)
    cookies = {c["name"] for c in page.context.cookies()}
    assert "algomirror_remember" in cookies

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login$"))
    assert page.get_by_text("You are signed out").is_visible()
    assert "algomirror_remember" not in {c["name"] for c in page.context.cookies()}

    page.reload()
    assert re.search(r"/login$", page.url), page.url
    assert page.get_by_role("button", name="Sign in").is_visible()
    page.goto(live_server + "/settings/")
    assert page.url.startswith(live_server + "/login")
    assert page.get_by_role("button", name="Sign in").is_visible()
