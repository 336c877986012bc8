"""The option chain and the feed status page in a real browser on the embedded demo (paper exchange,
engine and web on one live bus): the chain opens a viewing session, fills 2n+1 rows from the engine's
chain events and its LTP cells change without a reload; leaving the page ends the session; the feed
page shows the live feed state."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from algomirror.db.models import WebSocketSession
from tests.e2e.conftest import Demo, sign_in_demo
from tests.helpers import eventually

pytestmark = pytest.mark.e2e
DEADLINE = 30.0


def _sessions(demo: Demo) -> list[WebSocketSession]:
    with demo.database.session_factory() as session:
        return list(session.scalars(select(WebSocketSession)))


def _ltps(page: Any) -> list[str]:
    texts: list[str] = page.locator(
        '#chain-rows [data-cell="ce-ltp"], #chain-rows [data-cell="pe-ltp"]'
    ).all_text_contents()
    return texts


def test_the_chain_fills_live_and_its_ltps_change_without_a_reload(
    demo_server: Demo, browser_page: Any, artifacts_dir: Path
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    sign_in_demo(page, demo_server)
    page.goto(demo_server.url + "/market/chain?instrument=NIFTY&strikes=5")
    expect(page.locator("#chain")).to_be_visible()
    topic = page.locator("#chain").get_attribute("data-topic")
    assert topic is not None and ":NIFTY:" in topic

    # The page's viewing session, as the engine reads it.
    session = eventually(
        lambda: next(iter(_sessions(demo_server)), None), timeout=DEADLINE, what="a viewing session row"
    )
    assert (session.session_type, session.instrument, session.strike_count) == ("option_chain", "NIFTY", 5)
    assert topic.endswith(":" + (session.expiry or ""))

    rows = page.locator("#chain-rows tr[data-strike]")
    expect(rows).to_have_count(11, timeout=DEADLINE * 1000)
    expect(page.locator("#chain-rows tr.atm")).to_have_count(1)
    expect(page.locator("#chain-spot")).not_to_have_text("—")
    expect(page.locator("#chain-live-state")).to_have_text("live")
    atm = page.locator("#chain-rows tr.atm")
    expect(atm.locator('[data-cell="ce-tag"]')).to_have_text("ATM")
    expect(rows.first.locator('[data-cell="ce-tag"]')).to_have_text("ITM 5")
    expect(rows.first.locator('[data-cell="pe-tag"]')).to_have_text("OTM 5")
    expect(atm.locator('[data-cell="ce-ltp"]')).not_to_have_text("—", timeout=DEADLINE * 1000)
    expect(page.locator("#chain-pcr-oi")).not_to_have_text("—", timeout=DEADLINE * 1000)
    # In market hours the demo's feed delivers depth ticks: bid/ask quantities come with them.
    expect(page.locator("#chain-source")).to_have_text("ws", timeout=DEADLINE * 1000)
    expect(atm.locator('[data-cell="ce-bid_qty"]')).not_to_have_text("—")
    page.screenshot(path=str(artifacts_dir / "option-chain.png"), full_page=True)

    # The market moves (the demo clock runs 30x): the same cells show new prices, no navigation.
    first = _ltps(page)
    marker = page.evaluate("() => { window.__chainMarker = 1; return performance.timeOrigin; }")
    eventually(lambda: _ltps(page) != first, timeout=DEADLINE, what="an LTP cell changed")
    assert page.evaluate("() => window.__chainMarker") == 1
    assert page.evaluate("() => performance.timeOrigin") == marker
    updated = page.locator("#chain-updated").text_content()
    assert updated and updated.endswith("IST")

    # Leaving the page ends the session (the pagehide beacon).
    page.goto(demo_server.url + "/market/feeds")
    eventually(lambda: not _sessions(demo_server), timeout=DEADLINE, what="the session ended on pagehide")
    expect(page.locator("#feed-live-state")).to_have_text("live", timeout=DEADLINE * 1000)
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "connected", timeout=DEADLINE * 1000)
    expect(page.locator("#feed-subscriptions")).not_to_have_text("—")
    assert not problems, problems


def test_a_refused_parameter_says_why_in_the_page(demo_server: Demo, browser_page: Any) -> None:
    page = browser_page
    sign_in_demo(page, demo_server)
    page.goto(demo_server.url + "/market/chain?instrument=NIFTY&strikes=99")
    expect(page.locator("#chain-error")).to_contain_text("whole number from 1 to 50")
    expect(page.locator("#chain")).to_have_count(0)
    # The form still works from there.
    page.locator("#c-strikes").fill("3")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#chain-rows tr[data-strike]")).to_have_count(7, timeout=DEADLINE * 1000)
    # Another underlying: its own first expiry is asked for, not the NIFTY one still selected.
    page.locator("#c-instrument").select_option("SENSEX")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#chain")).to_have_attribute("data-instrument", "SENSEX")
    expect(page.locator("#chain-error")).to_have_count(0)
    expect(page.locator("#chain-rows tr[data-strike]")).to_have_count(7, timeout=DEADLINE * 1000)
    expect(page.locator("#chain-rows tr.atm .strike")).to_have_text(re.compile(r"^[0-9,]+00$"))  # step 100
