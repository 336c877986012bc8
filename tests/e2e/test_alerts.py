"""Engine alerts in a real browser on the embedded demo: an alert the engine raised appears in the
dashboard's live region without a reload, with the header's badge; Acknowledge removes it; a halted
account shows why and resumes after the confirmation page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from algomirror.db.models import TradingAccount, User
from algomirror.engine.alerts import raise_alert
from algomirror.engine.halts import halt_account_entries
from tests.e2e.conftest import Demo, sign_in_demo
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


def test_an_engine_alert_shows_live_and_is_acknowledged_and_a_halt_resumed(
    demo_server: Demo, browser_page: Any, artifacts_dir: Path
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    sign_in_demo(page, demo_server)
    page.goto(demo_server.url + "/")
    eventually(lambda: page.locator(".account-card").count() == 3, timeout=20, what="account cards")
    assert page.locator("#alerts").count() == 0
    stamp = page.evaluate("() => performance.timeOrigin")

    now = datetime.now(UTC)
    with demo_server.database.session() as session:
        user_id = session.scalar(select(User.id).where(User.username == demo_server.settings.demo_username))
        assert user_id is not None
        account = session.scalars(
            select(TradingAccount).where(TradingAccount.user_id == user_id).order_by(TradingAccount.id)
        ).first()
        assert account is not None
        account_id, name = account.id, account.account_name
        title = f"{name}: position missing at the broker: NIFTY01DEC2625800PE NFO NRML: ours -65, broker +0"
        alert = raise_alert(
            session,
            user_id=user_id,
            kind="reconciliation",
            severity="critical",
            title=title,
            details="It may have been closed outside AlgoMirror. Executions were not changed.",
            account_id=account_id,
            now=now,
        )
        halt_account_entries(session, account_id, "reconciliation: NIFTY01DEC2625800PE gap", now)
        session.flush()
        alert_id = alert.id

    item = page.locator(f"#alert-{alert_id}")
    eventually(lambda: item.count() == 1, timeout=20, interval=0.25, what="the alert in the live region")
    assert "ours -65, broker +0" in item.inner_text()
    badge = page.locator("#alert-badge")
    eventually(lambda: badge.count() == 1, timeout=20, interval=0.25, what="the header badge")
    assert page.evaluate("() => performance.timeOrigin") == stamp, "the page must not have reloaded"
    page.screenshot(path=str(artifacts_dir / "dashboard-alerts.png"), full_page=True)

    item.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(demo_server.url + "/")
    assert page.locator(f"#alert-{alert_id}").count() == 0
    assert page.locator("#alert-badge").count() == 0

    page.goto(f"{demo_server.url}/accounts/{account_id}")
    assert "Entries halted:" in page.locator("#entries-halted").inner_text()
    page.get_by_role("link", name="Resume entries").click()
    page.screenshot(path=str(artifacts_dir / "resume-entries.png"), full_page=True)
    page.get_by_role("button", name="Resume entries").click()
    page.wait_for_url(f"{demo_server.url}/accounts/{account_id}")
    assert page.locator("#entries-halted").count() == 0
    assert not problems, problems
