"""The risk monitor in a real browser on the embedded demo (issue 12 deliverable 6): execute an iron
condor on the three demo accounts as a newcomer does, open its risk monitor from the Execution page, and
see it follow the risk engine's live snapshots (SSE on the bus the engine and the web app share) without
a reload: the prices and P&L change, ages tick, the MTM chart draws; then the Risk index lists the run.
The strategy is exited at the end (the demo is shared by the module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Demo, sign_in_demo
from tests.e2e.demo_support import demo_accounts, execute_until_active, save_iron_condor, strategy_run

pytestmark = pytest.mark.e2e

NAME = "Risk monitor condor"


# The monitor's LTP and P&L cells as one text (what a trader watches change).
FIGURES_JS = """() => Array.from(document.querySelectorAll(
  '#rm-legs tr[data-execution-id] [data-field=ltp], #rm-legs tr[data-execution-id] [data-field=pnl], #rm-pnl'
)).map(el => el.textContent.trim()).join('|')"""


def test_monitor_follows_live_snapshots_without_reload(
    demo_server: Demo, chromium: Any, artifacts_dir: Path
) -> None:
    accounts = demo_accounts(demo_server)
    assert len(accounts) == 3
    context = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    # Every Server-Sent Events stream the page asks for (a user has 6 in all, so each tab should use one).
    streams: list[str] = []
    page.on("request", lambda req: streams.append(req.url) if "/live/stream" in req.url else None)
    try:
        sign_in_demo(page, demo_server)

        # Build from the template on the three accounts, preview, execute (as test_strategy_flow does).
        sid = save_iron_condor(page, demo_server, NAME, accounts)
        execute_until_active(page, demo_server, sid)
        run = strategy_run(demo_server, sid)
        assert run is not None

        # The Execution page links to the monitor.
        streams.clear()
        page.locator("#run-risk-link").click()
        page.wait_for_url(lambda u: u.endswith(f"/risk/runs/{run.id}"))
        page.evaluate("window.__noReload = true")
        assert page.locator("#rm-legs tr[data-execution-id]").count() == 12

        # The first snapshot arrives over SSE: the live marker turns on.
        page.locator("#rm-live[data-live=on]").wait_for(timeout=30_000)
        page.wait_for_function("() => !document.querySelector('#rm-pnl .unknown')", timeout=30_000)
        before = page.evaluate(FIGURES_JS)
        legs_at = page.locator("#rm-legs").bounding_box()
        # Prices move at the paper exchange: some LTP / P&L cell changes, in place.
        page.wait_for_function(f"(before) => ({FIGURES_JS})() !== before", arg=before, timeout=60_000)
        assert page.evaluate("window.__noReload === true"), (
            "the monitor reloaded instead of updating in place"
        )
        assert page.locator("#rm-legs").bounding_box() == legs_at, "the live update moved the layout"
        # Ages are ticked by the page; the MTM chart is drawn by the vendored library (a canvas).
        age = page.locator("#rm-legs tr[data-execution-id]").first.locator("[data-field=age]")
        assert age.inner_text().strip().endswith(" s") or age.inner_text().strip().endswith(" min")
        page.locator("#mtm-chart canvas").first.wait_for(timeout=10_000)

        # A breach and a Supertrend update in the engine's shapes (risk.py _fire payload,
        # supertrend_rule.event_of), published on the shared bus: the event is prepended, the latch shows it
        # fired, the cells fill.
        assert demo_server.bus is not None
        topic = f"run:{run.id}:risk"
        demo_server.bus.publish(
            topic,
            "max_loss",
            {
                "run_id": run.id,
                "account_id": accounts[0],
                "pnl": "-5000.00",
                "detail": "P&L -5,000 at or below -5,000",
                "executions": [],
                "rule": "max_loss",
                "action": "alert_only",
                "message": "P&L -5,000 at or below -5,000; alert only (auto-exit off)",
            },
        )
        first_event = page.locator("#risk-events li.risk-event").first
        first_event.wait_for(timeout=10_000)
        assert first_event.get_attribute("data-event-type") == "max_loss"
        assert "alert only (auto-exit off)" in first_event.inner_text()
        assert "Demo Alpha" in first_event.inner_text()
        page.locator("#latch-max_loss[data-fired=true]").wait_for(timeout=5_000)
        assert page.locator("#risk-events-empty").is_hidden()
        demo_server.bus.publish(
            topic,
            "supertrend",
            {
                "run_id": run.id,
                "timeframe": "5m",
                "state": "ok",
                "message": None,
                "candle_at": "2020-01-01T04:00:00+00:00",  # older than the premium chart's: no re-read
                "close": "101.50",
                "line": "98.25",
                "direction": -1,  # up (TradingView's convention, domain/supertrend.py)
                "exit_type": None,
            },
        )
        page.locator("#rm-supertrend [data-field=st_direction].positive", has_text="up").wait_for(
            timeout=5_000
        )
        assert page.locator("#rm-supertrend [data-field=st_line]").inner_text() == "98.25"
        assert "close 101.50" in page.locator("#rm-supertrend").inner_text()
        assert page.locator("#rm-legs").bounding_box() == legs_at, "an event moved the legs table"
        # The premium chart drew from that same event: the monitor's one stream feeds it, it has none.
        page.locator(f"#premium-state-{run.id}", has_text="up ▲ · ST 98.25").wait_for(timeout=5_000)
        assert len(streams) == 1, streams
        assert streams[0].endswith(f"/live/stream?topic=run%3A{run.id}%3Arisk"), streams
        page.screenshot(path=str(artifacts_dir / "risk-monitor.png"), full_page=True)

        # The index lists the run, live too, and links back to its monitor.
        page.goto(demo_server.url + "/risk/")
        row = page.locator(f"#risk-run-{run.id}")
        row.wait_for()
        page.locator("#risk-live-state[data-live=on]").wait_for(timeout=30_000)
        assert (
            row.get_by_role("link", name="Monitor", exact=True).get_attribute("href")
            == f"/risk/runs/{run.id}"
        )
        page.screenshot(path=str(artifacts_dir / "risk-index.png"), full_page=True)

        # Leave the demo flat: exit the strategy through its confirmation.
        page.goto(demo_server.url + f"/strategies/{sid}/run/{run.id}")
        page.locator("#run-exit").click()
        page.get_by_role("button", name="Yes, exit").click()
        page.locator("#run-status[data-status=closed]").wait_for(timeout=90_000)

        # A closed run's monitor is not live; its last prices age on the page and turn stale after 5 s.
        page.goto(demo_server.url + f"/risk/runs/{run.id}")
        page.locator("#rm-live", has_text="run ended").wait_for()
        page.locator("#rm-legs tr.is-stale [data-field=age].stale").first.wait_for(timeout=20_000)
        # On a phone the page fits the width (the legs become cards).
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_function("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
        page.screenshot(path=str(artifacts_dir / "risk-monitor-phone.png"), full_page=True)
        assert problems == []
    finally:
        context.close()
