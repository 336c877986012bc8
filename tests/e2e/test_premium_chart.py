"""The premium / Supertrend chart (static/js/premium_chart.js) in a real browser on the
embedded demo: execute a short strangle template on one demo account, open its risk monitor, and see the
chart drawn by the vendored Lightweight Charts from premium.json (candles + the Supertrend line), its
state line, and a live ``supertrend`` event (published on the shared bus) update that state — with no
script error or CSP violation on the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy import select, update

from algomirror.db.models import Strategy, StrategyRun, TradingAccount, User
from tests.e2e.conftest import Demo, sign_in_demo
from tests.e2e.demo_support import execute_until_active, save_iron_condor

pytestmark = pytest.mark.e2e

NAME = "Premium chart condor"


def _first_account(demo: Demo) -> int:
    with demo.database.session() as s:
        user = s.scalar(select(User).where(User.username == demo.settings.demo_username))
        assert user is not None
        account = s.scalar(
            select(TradingAccount.id)
            .where(TradingAccount.user_id == user.id, TradingAccount.is_active.is_(True))
            .order_by(TradingAccount.id)
        )
        assert account is not None
        return int(account)


def _run_id(demo: Demo, strategy_id: int) -> int | None:
    with demo.database.session() as s:
        return s.scalar(select(StrategyRun.id).where(StrategyRun.strategy_id == strategy_id))


def test_the_chart_draws_the_series_and_follows_supertrend_events(
    demo_server: Demo, chromium: Any, artifacts_dir: Path
) -> None:
    account = _first_account(demo_server)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    try:
        sign_in_demo(page, demo_server)
        sid = save_iron_condor(page, demo_server, NAME, [account])
        # The exit stays off (the engine must not close the run under the test); the chart draws anyway.
        with demo_server.database.session() as s:
            s.execute(
                update(Strategy)
                .where(Strategy.id == sid)
                .values(supertrend_exit_enabled=False, supertrend_period=3, supertrend_timeframe="5m")
            )
        execute_until_active(page, demo_server, sid)
        run_id = _run_id(demo_server, sid)
        assert run_id is not None

        page.goto(demo_server.url + f"/risk/runs/{run_id}")
        chart = page.locator(f".premium-chart[data-run-id='{run_id}']")
        chart.locator("canvas").first.wait_for(timeout=15_000)
        page.wait_for_function(
            "(id) => Number(document.querySelector(`.premium-chart[data-run-id='${id}']`)"
            ".dataset.candles) > 0",
            arg=run_id,
            timeout=30_000,
        )
        status = page.locator(f"#premium-state-{run_id}")
        status.wait_for()
        assert status.inner_text().startswith("Supertrend exit: off")
        assert status.get_attribute("role") == "status"

        assert demo_server.bus is not None
        event = {
            "run_id": run_id,
            "timeframe": "5m",
            "state": "ok",
            "message": "exit state",
            "candle_at": "2020-01-01T04:00:00+00:00",  # older than the chart's candles: no re-read
            "close": "101.50",
            "line": "98.25",
            "direction": -1,
            "exit_type": "breakout",
        }
        exit_state = page.locator(f"#premium-state-{run_id}[data-state=exit]")
        for _ in range(15):  # the page's stream may still be connecting: publish until it is heard
            demo_server.bus.publish(f"run:{run_id}:risk", "supertrend", event)
            try:
                exit_state.wait_for(timeout=2_000)
                break
            except PlaywrightTimeout:
                continue
        exit_state.wait_for(timeout=1_000)
        assert status.inner_text() == "Supertrend: exit state · up ▲ · ST 98.25"
        page.screenshot(path=str(artifacts_dir / "premium-chart.png"), full_page=True)

        # Leave the demo flat.
        page.goto(demo_server.url + f"/strategies/{sid}/run/{run_id}")
        page.locator("#run-exit").click()
        page.get_by_role("button", name="Yes, exit").click()
        page.locator("#run-status[data-status=closed]").wait_for(timeout=90_000)
        assert problems == []
    finally:
        context.close()
