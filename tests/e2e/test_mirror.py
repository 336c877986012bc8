"""Mirror order in a real browser on the embedded demo (paper exchange + engine): the form, the review
with each account's lots and quantity, Send, and the live result region filling in without a reload
until every account is filled; then the mirror check page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from algomirror.db.models import (
    OrderIntent,
    Position,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
    User,
)
from tests.e2e.conftest import Demo, sign_in_demo
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


def _demo_symbol(demo: Demo) -> tuple[int, list[int], str]:
    """The demo user, their accounts, and a NIFTY option the demo seeding holds (synced positions)."""
    with demo.database.session_factory() as session:
        user_id = session.scalar(select(User.id).where(User.username == demo.settings.demo_username))
        assert user_id is not None
        accounts = list(
            session.scalars(
                select(TradingAccount.id).where(TradingAccount.user_id == user_id).order_by(TradingAccount.id)
            )
        )
        symbol = session.scalar(
            select(Position.symbol)
            .where(
                Position.account_id.in_(accounts), Position.symbol.like("NIFTY%"), Position.exchange == "NFO"
            )
            .order_by(Position.id)
        )
    return user_id, accounts, symbol or ""


def test_mirror_order_to_two_accounts_fills_live(
    demo_server: Demo, browser_page: Any, artifacts_dir: Path
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    sign_in_demo(page, demo_server)
    _user, accounts, symbol = eventually(
        lambda: (found := _demo_symbol(demo_server))[2] and found, timeout=30, what="a synced NIFTY position"
    )
    first, second = accounts[0], accounts[1]

    page.goto(demo_server.url + "/positions")
    page.locator("#mirror-order-link").click()
    page.wait_for_url(lambda u: u.endswith("/mirror"))
    page.fill("#m-symbol", symbol)
    page.fill("#m-lots", "1")
    for account_id in accounts:
        page.locator(f"#acct-{account_id}").set_checked(account_id in (first, second))
    page.fill(f"#mult-{first}", "1")
    page.fill(f"#mult-{second}", "2")
    page.screenshot(path=str(artifacts_dir / "mirror-form.png"), full_page=True)
    page.get_by_role("button", name="Review").click()
    rows = page.locator("#c-accounts tbody tr")
    # Wait for the review page (Playwright's deadline) instead of counting during the navigation.
    rows.first.wait_for(state="visible", timeout=15_000)
    assert rows.count() == 2
    assert [c.strip() for c in page.locator(f"#c-acct-{second} td").all_inner_texts()][1:4] == [
        "2",
        "2",
        "130",
    ]
    page.screenshot(path=str(artifacts_dir / "mirror-review.png"), full_page=True)

    page.get_by_role("button", name="Yes, send to 2 account(s)").click()
    page.wait_for_url(lambda u: "/mirror/orders/" in u)
    eventually(
        lambda: page.locator("#mo-status").inner_text().startswith("Finished"), timeout=30, what="the result"
    )
    statuses = [page.locator(f"#mo-acct-{a}").get_attribute("data-status") for a in (first, second)]
    assert statuses == ["filled", "filled"]
    page.screenshot(path=str(artifacts_dir / "mirror-result.png"), full_page=True)
    with demo_server.database.session_factory() as session:
        intents = session.scalars(select(OrderIntent).where(OrderIntent.purpose == "manual")).all()
        assert sorted((i.account_id, i.quantity, i.state) for i in intents) == [
            (first, 65, "complete"),
            (second, 130, "complete"),
        ]

    # A run that intends 1 lot of the symbol on the first account: the broker now holds more.
    run_id = _open_run(demo_server, _user, first, symbol)
    # Bring in line: the confirmation names the order, the engine sends it, the next sync shows it.
    eventually(
        lambda: _brought_in_line(page, demo_server, run_id, artifacts_dir),
        timeout=60,
        what="the correction sent",
    )
    eventually(
        lambda: page.locator("#mo-status").inner_text().startswith("Finished"),
        timeout=30,
        what="the correction",
    )
    page.goto(demo_server.url + f"/mirror/check?run={run_id}")
    eventually(
        lambda: page.locator(f"#mc-table-{run_id} tbody tr").first.get_attribute("data-kind") == "ok",
        timeout=30,
        what="the account in line after the next sync (live region)",
    )
    assert problems == []


def _brought_in_line(page: Any, demo: Demo, run_id: int, artifacts_dir: Path) -> bool:
    """One try of the mirror check's Bring in line for the run's first row: True once the correction
    is queued (the order's page is shown). False when the account's positions were unknown at the
    check or at the confirmation: books older than two sync intervals are never corrected, which a
    loaded machine's demo reaches now and then; the next sync makes them fresh again."""
    page.goto(demo.url + f"/mirror/check?run={run_id}")
    assert page.locator("h1").inner_text().startswith("Mirror check")
    row = page.locator(f"#mc-table-{run_id} tbody tr").first
    kind = row.get_attribute("data-kind")
    if kind == "unknown":
        return False
    page.screenshot(path=str(artifacts_dir / "mirror-check.png"), full_page=True)
    assert kind == "different"
    row.get_by_role("link", name="Bring in line").click()
    page.wait_for_url(lambda u: "/fix" in u)
    if page.locator("#d-order").count() == 0:
        assert "no longer an open drift (unknown)" in page.content()
        return False
    assert page.locator("#d-order").inner_text().startswith("SELL 65")
    page.get_by_role("button", name="Yes, send SELL 65").click()
    page.wait_for_load_state()
    if "/mirror/orders/" in page.url:
        return True
    # Refused (409): the positions went unknown between the confirmation and the send; nothing queued.
    assert "no longer an open drift (unknown)" in page.content(), page.url
    return False


def _open_run(demo: Demo, user_id: int, account_id: int, symbol: str, name: str = "Mirror check demo") -> int:
    with demo.database.session() as session:
        strategy = Strategy(user_id=user_id, name=name)
        session.add(strategy)
        session.flush()
        leg = StrategyLeg(
            strategy_id=strategy.id,
            leg_number=1,
            instrument="NIFTY",
            product_type="options",
            expiry="current_week",
            action="BUY",
            option_type=symbol[-2:],
            order_type="MARKET",
            lots=1,
        )
        run = StrategyRun(strategy_id=strategy.id, status="active")
        session.add_all([leg, run])
        session.flush()
        session.add(
            StrategyExecution(
                strategy_id=strategy.id,
                account_id=account_id,
                leg_id=leg.id,
                run_id=run.id,
                symbol=symbol,
                exchange="NFO",
                product="NRML",
                planned_quantity=65,
                filled_quantity=65,
                status="active",
            )
        )
        return run.id


def test_mirror_form_and_review_fit_a_phone(demo_server: Demo, chromium: Any, artifacts_dir: Path) -> None:
    """At 390 px the accounts table of the form and the review's table are cards: no sideways scroll."""
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in_demo(page, demo_server)
        _user, accounts, symbol = eventually(
            lambda: (found := _demo_symbol(demo_server))[2] and found,
            timeout=30,
            what="a synced NIFTY position",
        )
        page.goto(demo_server.url + "/mirror")
        width = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        scroll, client = page.evaluate(width)
        page.screenshot(path=str(artifacts_dir / "mirror-form-390.png"), full_page=True)
        assert scroll == client, f"the form scrolls sideways at 390 px: {scroll} > {client}"
        page.fill("#m-symbol", symbol)
        for account_id in accounts:
            page.locator(f"#acct-{account_id}").set_checked(True)
        page.get_by_role("button", name="Review").click()
        page.wait_for_url(lambda u: u.endswith("/mirror/review"))
        page.locator("#c-accounts tbody tr").first.wait_for(state="visible", timeout=15_000)
        assert page.locator("#c-accounts tbody tr").count() == len(accounts)
        scroll, client = page.evaluate(width)
        page.screenshot(path=str(artifacts_dir / "mirror-review-390.png"), full_page=True)
        assert scroll == client, f"the review scrolls sideways at 390 px: {scroll} > {client}"
        # The mirror check's rows are cards too.
        run_id = _open_run(demo_server, _user, accounts[0], symbol, "Mirror check on a phone")
        page.goto(demo_server.url + f"/mirror/check?run={run_id}")
        assert page.locator(f"#mc-table-{run_id} tbody tr").count() >= 1
        scroll, client = page.evaluate(width)
        page.screenshot(path=str(artifacts_dir / "mirror-check-390.png"), full_page=True)
        assert scroll == client, f"the mirror check scrolls sideways at 390 px: {scroll} > {client}"
    finally:
        context.close()
