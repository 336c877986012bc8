"""Preview & execute in a real browser on the embedded demo: the strategy list's "Preview & execute"
opens the page, which queues its preview on load (htmx POST), shows "Resolving…" and then the engine's
resolution of the strategy on the paper exchange; Execute with its confirmation queues the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from algomirror.db.models import EngineCommand, Strategy, StrategyLeg, TradingAccount, User
from tests.e2e.conftest import Demo, sign_in_demo
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


def _straddle(demo: Demo) -> int:
    with demo.database.session() as s:
        user = s.scalar(select(User).where(User.username == demo.settings.demo_username))
        assert user is not None
        accounts = s.scalars(
            select(TradingAccount.id).where(TradingAccount.user_id == user.id).order_by(TradingAccount.id)
        ).all()
        strategy = Strategy(
            user_id=user.id,
            name="Browser straddle",
            selected_accounts=[{"account_id": a} for a in accounts],
            legs=[
                StrategyLeg(
                    leg_number=n,
                    instrument="NIFTY",
                    product_type="options",
                    expiry="current_week",
                    action=action,
                    option_type=kind,
                    strike_selection=selection,
                    strike_offset=offset,
                )
                for n, (action, kind, selection, offset) in enumerate(
                    # No PE hedge: the SELL PE is a naked short (a warning, still placeable).
                    (("BUY", "CE", "OTM", 4), ("SELL", "CE", "ATM", 0), ("SELL", "PE", "ATM", 0)),
                    start=1,
                )
            ],
        )
        s.add(strategy)
        s.flush()
        return strategy.id


def test_preview_then_execute_in_the_browser(
    demo_server: Demo, browser_page: Any, artifacts_dir: Path
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    sid = _straddle(demo_server)
    sign_in_demo(page, demo_server)
    page.goto(demo_server.url + "/strategies/")
    page.locator(f"#strat-{sid}").get_by_role("link", name="Preview & execute").click()
    page.wait_for_url(lambda u: f"/strategies/{sid}/preview" in u)

    # Queued on load; the engine resolves; the region shows the tables without a reload.
    page.locator("#pv-orders").wait_for(timeout=60_000)
    assert "?command=" in page.url  # the address names this preview (a reload shows it again)
    rows = page.locator("#pv-orders tbody tr")
    assert rows.count() == 9
    statuses = [rows.nth(i).get_attribute("data-status") for i in range(9)]
    page.screenshot(path=str(artifacts_dir / "strategy-preview.png"), full_page=True)
    assert statuses == ["ok"] * 9, page.locator("#pv-accounts").inner_text()
    legs = page.locator("#pv-legs tbody tr")
    assert "naked short" in legs.nth(2).inner_text() and "row-warning" in (
        legs.nth(2).get_attribute("class") or ""
    )
    assert "naked short" not in legs.nth(1).inner_text()

    page.get_by_label("I confirm: place these orders now").check()
    page.get_by_role("button", name="Execute").click()
    page.wait_for_url(lambda u: "/preview" not in u or "command=" in u)

    def queued() -> bool:
        with demo_server.database.session_factory() as s:
            kinds = s.scalars(
                select(EngineCommand.kind).where(EngineCommand.kind == "execute_strategy")
            ).all()
            return len(kinds) == 1

    eventually(queued, timeout=10, what="one execute_strategy command")
    assert problems == []
