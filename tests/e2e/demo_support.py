"""Helpers shared by the browser tests that build a strategy on the embedded demo: the demo user's
accounts, a strategy and its run looked up by name, and saving the iron condor template through the
strategy form."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from algomirror.db.models import Strategy, StrategyRun, TradingAccount, User
from tests.e2e.conftest import Demo
from tests.helpers import eventually


def demo_accounts(demo: Demo) -> list[int]:
    """The ids of the demo user's active trading accounts, in id order."""
    with demo.database.session() as s:
        user = s.scalar(select(User).where(User.username == demo.settings.demo_username))
        assert user is not None
        return list(
            s.scalars(
                select(TradingAccount.id)
                .where(TradingAccount.user_id == user.id, TradingAccount.is_active.is_(True))
                .order_by(TradingAccount.id)
            )
        )


def strategy_id(demo: Demo, name: str) -> int | None:
    """The id of the strategy called ``name``, or None while there is none."""
    with demo.database.session() as s:
        return s.scalar(select(Strategy.id).where(Strategy.name == name))


def strategy_run(demo: Demo, strategy_id: int) -> StrategyRun | None:
    """The strategy's run, or None while it has none."""
    with demo.database.session() as s:
        return s.scalar(select(StrategyRun).where(StrategyRun.strategy_id == strategy_id))


def save_iron_condor(page: Any, demo: Demo, name: str, accounts: list[int]) -> int:
    """Build a strategy called ``name`` from the iron condor template on ``accounts`` through the form
    (the signed-in ``page``) and save it; its id, once the database has it (AssertionError after 10 s)."""
    page.goto(demo.url + "/strategies/")
    page.locator("#tpl-iron_condor").get_by_role("link", name="Use template").click()
    page.get_by_label("Name").fill(name)
    for account_id in accounts:
        page.locator(f"#acct-choice-{account_id} input[type=checkbox]").check()
    page.get_by_role("button", name="Save").click()
    eventually(lambda: strategy_id(demo, name) is not None, timeout=10, what="strategy saved")
    sid = strategy_id(demo, name)
    assert sid is not None
    return sid


def execute_until_active(page: Any, demo: Demo, sid: int) -> None:
    """Open the strategy's preview from the Strategies page, confirm and execute it, and wait on its run
    page until the run is active (Playwright's TimeoutError past the waits' limits)."""
    page.goto(demo.url + "/strategies/")
    page.locator(f"#strat-{sid}").get_by_role("link", name="Preview & execute").click()
    page.locator("#pv-orders").wait_for(timeout=60_000)
    page.get_by_label("I confirm: place these orders now").check()
    page.get_by_role("button", name="Execute").click()
    page.wait_for_url(lambda u: f"/strategies/{sid}/run" in u, timeout=30_000)
    page.locator("#run-status[data-status=active]").wait_for(timeout=90_000)
