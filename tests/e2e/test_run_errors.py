"""A leg whose exit gave up, in a real browser on the running demo, at 1280 px and on a 390 px phone: the
run page's error row shows "Retry exit" and "Closed outside…" on screen; "Closed outside…" asks the
price, a bad one comes back with its inline error and the typed value, a good one records the leg
exited (closed externally) and the run closes. Nothing is sent (no exit command). Screenshots land in
tests/e2e/artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from algomirror.db.models import EngineCommand, Strategy, StrategyExecution, StrategyLeg, TradingAccount, User
from algomirror.engine.planning import PlannedExecution, plan_run
from tests.e2e.conftest import Demo, sign_in_demo

pytestmark = pytest.mark.e2e


def _stuck_run(demo: Demo, name: str) -> tuple[int, int, int]:
    """A run of one SELL leg on the demo's first account whose exit is in error (75 open, entry 20.00):
    (strategy id, run id, execution id)."""
    with demo.database.session() as s:
        user = s.scalar(select(User).where(User.username == demo.settings.demo_username))
        assert user is not None
        account = s.scalars(
            select(TradingAccount.id).where(TradingAccount.user_id == user.id).order_by(TradingAccount.id)
        ).first()
        assert account is not None
        strategy = Strategy(
            user_id=user.id,
            name=name,
            legs=[
                StrategyLeg(
                    leg_number=1, instrument="NIFTY", product_type="options", action="SELL", option_type="CE"
                )
            ],
        )
        s.add(strategy)
        s.flush()
        run = plan_run(
            s,
            strategy.id,
            [PlannedExecution(strategy.legs[0].id, account, "NIFTY01DEC2626000CE", "NFO", "MIS", 75)],
            now=datetime.now(UTC),  # only shown: the run's start
        )
        row = s.scalars(select(StrategyExecution).where(StrategyExecution.run_id == run.id)).one()
        row.status, row.filled_quantity, row.quantity = "error", 75, 75
        row.entry_price, row.exit_retry_count = Decimal("20.00"), 5
        row.error_message = "exit attempt 5 filled 0 of 75: RMS: order rejected; the position is still open"
        run.status = "error"
        s.commit()
        return strategy.id, run.id, row.id


@pytest.mark.parametrize("width", [1280, 390])
def test_closed_outside_in_the_browser(
    demo_server: Demo, chromium: Any, artifacts_dir: Path, width: int
) -> None:
    strategy_id, run_id, execution_id = _stuck_run(demo_server, f"Stuck exit {width}")
    context = chromium.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        sign_in_demo(page, demo_server)
        run_page = f"{demo_server.url}/strategies/{strategy_id}/run/{run_id}"
        page.goto(run_page)
        row = page.locator(f"#ex-{execution_id}")
        retry = row.get_by_role("link", name="Retry exit", exact=False)
        closed = row.locator('[data-action="closed-outside"]')
        for button in (retry, closed):
            button.scroll_into_view_if_needed()
            box = button.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, box
        page.screenshot(path=str(artifacts_dir / f"run-error-row-{width}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0

        closed.click()
        page.wait_for_url(lambda u: "/closed-outside" in u)
        assert "AlgoMirror will not send any order." in page.locator("#closed-outside-note").inner_text()
        page.get_by_label("Exit price").fill("-3")
        page.get_by_role("button", name="Record as closed at this price").click()
        page.locator("#closed-price-error").wait_for()
        assert "more than 0" in page.locator("#closed-price-error").inner_text()
        assert page.get_by_label("Exit price").input_value() == "-3"
        page.screenshot(path=str(artifacts_dir / f"run-closed-outside-error-{width}.png"), full_page=True)
        page.get_by_label("Exit price").fill("23.45")
        page.get_by_role("button", name="Record as closed at this price").click()
        page.wait_for_url(lambda u: u.rstrip("/").endswith(f"/run/{run_id}"))
        assert page.locator(f"#ex-{execution_id}").get_attribute("data-status") == "exited"
        assert page.locator("#run-status").get_attribute("data-status") == "closed"
        assert "closed externally" in page.locator(f"#ex-{execution_id}").inner_text()
        with demo_server.database.session_factory() as s:
            done = s.get(StrategyExecution, execution_id)
            assert done is not None and done.realized_pnl == Decimal("-258.75")  # (20.00 − 23.45) × 75
            commands = s.scalars(select(EngineCommand).where(EngineCommand.kind == "exit")).all()
            assert not [c for c in commands if (c.payload or {}).get("execution_id") == execution_id]
        assert problems == []
    finally:
        context.close()
