"""The newcomer's path in a real browser on the embedded demo (issue 11 "Done when"): build an iron
condor from its template on the three demo accounts, preview it, execute it, watch the legs fill on the
run page without a reload, exit the strategy, and see every leg exited — with exactly one entry order and
one exit order per leg and account at the paper exchange (counted from the journal, whose keys are
unique per order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from algomirror.db.models import OrderIntent, StrategyExecution
from tests.e2e.conftest import Demo, sign_in_demo
from tests.e2e.demo_support import demo_accounts, save_iron_condor, strategy_run

pytestmark = pytest.mark.e2e

NAME = "Newcomer condor"


def _executions(demo: Demo, strategy_id: int) -> list[StrategyExecution]:
    with demo.database.session() as s:
        return list(s.scalars(select(StrategyExecution).where(StrategyExecution.strategy_id == strategy_id)))


def test_template_preview_execute_watch_and_exit(
    demo_server: Demo, chromium: Any, artifacts_dir: Path
) -> None:
    accounts = demo_accounts(demo_server)
    assert len(accounts) == 3
    context = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        sign_in_demo(page, demo_server)

        # 1. Build from the template.
        sid = save_iron_condor(page, demo_server, NAME, accounts)

        # 2. Preview: 4 legs x 3 accounts, all placeable.
        page.goto(demo_server.url + "/strategies/")
        page.locator(f"#strat-{sid}").get_by_role("link", name="Preview & execute").click()
        page.locator("#pv-orders").wait_for(timeout=60_000)
        rows = page.locator("#pv-orders tbody tr")
        assert rows.count() == 12
        statuses = [rows.nth(i).get_attribute("data-status") for i in range(12)]
        assert statuses == ["ok"] * 12, page.locator("#pv-accounts").inner_text()
        page.screenshot(path=str(artifacts_dir / "flow-preview.png"), full_page=True)

        # 3. Execute, then watch the run page fill without a reload.
        page.get_by_label("I confirm: place these orders now").check()
        page.get_by_role("button", name="Execute").click()
        page.wait_for_url(lambda u: f"/strategies/{sid}/run" in u, timeout=30_000)
        page.locator("#run-status").wait_for(timeout=60_000)
        page.evaluate("window.__noReload = true")
        page.locator("#run-status[data-status=active]").wait_for(timeout=90_000)
        page.locator("tr[data-status=active]").nth(11).wait_for(timeout=30_000)
        assert page.evaluate("window.__noReload === true"), "the run page reloaded instead of merging"
        assert page.locator("tr[data-execution-id]").count() == 12
        page.screenshot(path=str(artifacts_dir / "flow-run-active.png"), full_page=True)
        entered = _executions(demo_server, sid)
        assert len(entered) == 12 and {e.status for e in entered} == {"active"}
        assert all(e.filled_quantity > 0 and e.entry_price is not None for e in entered)

        # 4. Exit the strategy through its confirmation.
        page.locator("#run-exit").click()  # the header's (the table footer has one too)
        page.get_by_role("button", name="Yes, exit").click()
        page.wait_for_url(lambda u: f"/strategies/{sid}/run" in u and "/exit" not in u)
        page.evaluate("window.__noReload = true")
        page.locator("#run-status[data-status=closed]").wait_for(timeout=90_000)
        assert page.evaluate("window.__noReload === true"), "the run page reloaded instead of merging"
        page.screenshot(path=str(artifacts_dir / "flow-run-closed.png"), full_page=True)

        exited = _executions(demo_server, sid)
        assert {e.status for e in exited} == {"exited"}
        assert all(e.exited_quantity == e.filled_quantity and e.realized_pnl is not None for e in exited)
        run = strategy_run(demo_server, sid)
        assert run is not None and run.status == "closed" and run.final_pnl is not None
        assert run.final_pnl == sum(e.realized_pnl for e in exited if e.realized_pnl is not None)
        with demo_server.database.session() as s:
            ids = [e.id for e in exited]
            per_purpose = dict(
                s.execute(
                    select(OrderIntent.purpose, func.count())
                    .where(OrderIntent.execution_id.in_(ids), OrderIntent.state == "complete")
                    .group_by(OrderIntent.purpose)
                ).all()
            )
            unsettled = s.scalar(
                select(func.count())
                .select_from(OrderIntent)
                .where(OrderIntent.execution_id.in_(ids), OrderIntent.state != "complete")
            )
        # One entry and one exit order per leg x account (the demo's quantities need no freeze slicing).
        assert per_purpose == {"entry": 12, "exit": 12}
        assert unsettled == 0
        assert problems == []
    finally:
        context.close()
