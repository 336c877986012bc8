"""The Risk pages (issue 12 deliverable 6; PRODUCT §5.12, §6.9) through the Flask client, on SQLite and
PostgreSQL: the index lists the user's open runs with P&L, limits, trailing stop and data age, and the
latest risk events, with an empty state; the monitor renders a run's legs × accounts with their levels,
per-account and run P&L, its latches, its last 20 events, the MTM chart container and the premium chart
container (its script only when the file exists); ``mtm.json`` returns the run's samples as chart points;
signed out is a redirect to sign-in; another user's run (or a missing one) is a 404 on every route."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from algomirror.db.models import (
    RiskEvent,
    RunPnlSample,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
)
from algomirror.engine.planning import PlannedExecution, plan_run
from algomirror.web import risk
from tests.factories import make_account
from tests.integration.web_support import START, WebEnv, make_env, signed_in


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


@dataclass
class Run:
    strategy_id: int
    run_id: int
    accounts: list[int]
    executions: list[int]  # account-major, leg order: [a0 BUY PE, a0 SELL CE, a1 BUY PE, a1 SELL CE]


def make_run(env: WebEnv, username: str, name: str, *, accounts: int = 2, **strategy_fields: object) -> Run:
    """A strategy (BUY PE hedge + SELL CE) planned on ``accounts`` accounts; every execution active with
    a fresh mark, so the run's P&L is known."""
    uid = env.user(username).id
    with env.database.session() as s:
        account_ids = [make_account(s, uid, f"{name} acct {i}").id for i in range(accounts)]
        strategy = Strategy(user_id=uid, name=name, **strategy_fields)
        for number, (action, option) in enumerate((("BUY", "PE"), ("SELL", "CE")), start=1):
            strategy.legs.append(
                StrategyLeg(
                    leg_number=number,
                    instrument="NIFTY",
                    product_type="options",
                    action=action,
                    option_type=option,
                )
            )
        s.add(strategy)
        s.flush()
        legs = [leg.id for leg in strategy.legs]
        planned = [
            PlannedExecution(
                leg_id=leg,
                account_id=account,
                symbol=f"NIFTY25NOV24000{'PE' if i == 0 else 'CE'}",
                exchange="NFO",
                product="MIS",
                quantity=75,
            )
            for account in account_ids
            for i, leg in enumerate(legs)
        ]
        run = plan_run(s, strategy.id, planned, now=START)
        rows = list(
            s.scalars(
                select(StrategyExecution)
                .where(StrategyExecution.run_id == run.id)
                .order_by(StrategyExecution.account_id, StrategyExecution.leg_id)
            )
        )
        for row in rows:
            buy = row.leg_id == legs[0]
            row.status = "active"
            row.filled_quantity = 75
            row.entry_price = Decimal("100.00") if buy else Decimal("200.00")
            row.entry_time = START
            # BUY 100 → 110 (+750), SELL 200 → 190 (+750): +1,500 per account.
            row.last_price = Decimal("110.00") if buy else Decimal("190.00")
            row.last_price_updated = START - timedelta(seconds=2)
            row.last_price_source = "ws"
            row.stop_loss_price = Decimal("80.00") if buy else Decimal("240.00")
            row.take_profit_price = None if buy else Decimal("150.00")
        run.status = "active"
        run.peak_pnl = Decimal("1800.00")
        run.trailing_initial_stop = Decimal("-1200.00")
        run.trailing_stop_level = Decimal("600.00")
        run.base_premium = Decimal("7500.00")
        s.commit()
        return Run(strategy.id, run.id, account_ids, [r.id for r in rows])


def add_event(
    env: WebEnv, run: Run, execution_id: int, *, event_type: str, minutes: int, **fields: object
) -> int:
    with env.database.session() as s:
        event = RiskEvent(
            strategy_execution_id=execution_id,
            run_id=run.run_id,
            event_type=event_type,
            created_at=START + timedelta(minutes=minutes),
            **fields,
        )
        s.add(event)
        s.commit()
        return event.id


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def element(html: str, element_id: str) -> str:
    match = re.search(rf'<(\w+)[^>]* id="{re.escape(element_id)}"[^>]*>.*?</\1>', html, re.S)
    assert match, f"no element #{element_id}"
    return match.group(0)


def test_signed_out_is_sent_to_sign_in(env: WebEnv) -> None:
    client = env.client()
    for path in ("/risk/", "/risk/runs/1", "/risk/runs/1/mtm.json"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"]


def test_index_empty_state_explains(alice: FlaskClient) -> None:
    page = alice.get("/risk/").get_data(as_text=True)
    assert 'id="risk-empty"' in page
    assert "No open runs" in text_of(element(page, "risk-empty"))
    assert 'id="risk-runs"' not in page
    assert "No risk events yet" in page
    for link in ("/risk/kill", "/market/chain", "/market/feeds"):
        assert f'href="{link}"' in page


def test_index_lists_open_runs_with_limits_and_latest_events(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Condor A", max_loss=Decimal("5000"), max_profit=Decimal("8000"))
    closed = make_run(env, "alice", "Closed one")
    with env.database.session() as s:
        done = s.get(StrategyRun, closed.run_id)
        assert done is not None
        done.status, done.ended_at = "closed", START
        s.commit()
    first = add_event(
        env,
        run,
        run.executions[0],
        event_type="stop_loss",
        minutes=1,
        action_taken="exit_initiated",
        details=json.dumps({"detail": "LTP 79 at or below stop 80"}),
    )
    second = add_event(
        env,
        run,
        run.executions[1],
        event_type="max_loss",
        minutes=2,
        action_taken="alert_only",
        trigger_value=Decimal("-5000.00"),
        threshold_value=Decimal("5000.00"),
        details="plain text detail",
    )

    page = alice.get("/risk/").get_data(as_text=True)
    row = element(page, f"risk-run-{run.run_id}")
    assert f'id="risk-run-{closed.run_id}"' not in page
    assert "Condor A" in row and f'href="/risk/runs/{run.run_id}"' in row
    cells = dict(re.findall(r'data-field="(\w+)"[^>]*>(.*?)</td>', row, re.S))
    assert text_of(cells["pnl"]).strip() == "3,000.00"  # 2 accounts × +1,500
    assert text_of(cells["max_loss"]).strip() == "5,000.00"
    assert text_of(cells["max_profit"]).strip() == "8,000.00"
    assert text_of(cells["trailing_stop"]).strip() == "600.00"
    assert text_of(cells["age"]).strip() == "2 s ago"
    # The section tells the script which runs to follow live.
    assert f'data-runs="{run.run_id}"' in page
    events = element(page, "risk-events")
    assert events.index(f"risk-event-{second}") < events.index(f"risk-event-{first}")  # newest first
    assert "LTP 79 at or below stop 80" in events and "plain text detail" in events
    assert "Condor A #" in text_of(events)
    assert 'id="risk-events-empty" hidden' in page


def test_monitor_renders_legs_levels_latches_and_events(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Condor M", max_loss=Decimal("5000"))
    with env.database.session() as s:
        row = s.get(StrategyRun, run.run_id)
        assert row is not None
        row.max_loss_triggered_at, row.max_loss_value = START + timedelta(minutes=3), Decimal("-5000.00")
        s.commit()
    ids = [
        add_event(
            env, run, run.executions[i % 4], event_type="stop_loss", minutes=i, action_taken="exit_initiated"
        )
        for i in range(risk.EVENTS_SHOWN + 3)
    ]
    page = alice.get(f"/risk/runs/{run.run_id}").get_data(as_text=True)

    panel = element(page, "risk-monitor")
    assert f'data-run-id="{run.run_id}"' in panel and 'data-open="true"' in panel
    assert 'data-stale-seconds="5"' in panel and 'data-max-loss="5000.00"' in panel
    assert text_of(element(page, "rm-pnl")).strip() == "3,000.00"
    assert 'data-unknown="false"' in element(page, "rm-unknown")
    assert text_of(element(page, "rm-peak")).strip() == "1,800.00"
    assert text_of(element(page, "rm-trailing")).strip() == "600.00"
    assert text_of(element(page, "rm-trailing-initial")).strip() == "-1,200.00"
    assert text_of(element(page, "rm-base-premium")).strip() == "7,500.00"
    assert "fired" in text_of(element(page, "latch-max_loss"))
    assert "not fired" in text_of(element(page, "latch-trailing_stop"))

    sell = element(page, f"rm-ex-{run.executions[1]}")
    cells = {k: text_of(v).strip() for k, v in re.findall(r'data-field="(\w+)"[^>]*>(.*?)</td>', sell, re.S)}
    assert cells["open_qty"] == "75" and cells["entry"] == "200.00" and cells["ltp"] == "190.00"
    assert cells["pnl"] == "750.00" and cells["stop_loss"] == "240.00" and cells["target"] == "150.00"
    assert "active" in cells["status"]
    assert "NIFTY25NOV24000CE" in sell and "SELL" in sell and "data-mark-at=" in sell
    buy = element(page, f"rm-ex-{run.executions[0]}")
    assert re.search(r'data-field="target">—<', buy)
    for account in run.accounts:
        assert text_of(element(page, f"rm-acct-{account}")).split()[-1] == "1,500.00"

    events = re.findall(r'id="risk-event-(\d+)"', page)
    assert [int(e) for e in events] == list(reversed(ids))[: risk.EVENTS_SHOWN]
    # The charts: MTM from this blueprint, the premium chart's container (web/premium_chart.py).
    assert f'data-url="/risk/runs/{run.run_id}/mtm.json"' in page
    premium = f'data-url="/risk/runs/{run.run_id}/premium.json" data-run-id="{run.run_id}"'
    assert f'<div class="premium-chart" {premium} data-live="off">' in page
    assert "vendor/lightweight-charts.standalone.production.js" in page
    assert "js/live.js" in page and "js/risk_monitor.js" in page
    assert "https://www.tradingview.com/" in page  # the chart library's attribution (its licence)


def test_premium_chart_script_is_included_and_opens_no_stream(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Condor P", accounts=1)
    page = alice.get(f"/risk/runs/{run.run_id}").get_data(as_text=True)
    assert '<script src="/static/js/premium_chart.js" defer></script>' in page
    # The monitor's one stream feeds the chart (risk_monitor.js): the chart must not open its own.
    assert re.search(r'<div class="premium-chart" [^>]*data-live="off"', page)


def test_unknown_mark_makes_the_pnl_unknown_and_the_age_shows(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Condor U", accounts=1)
    with env.database.session() as s:
        row = s.get(StrategyExecution, run.executions[0])
        assert row is not None
        row.last_price_updated = START - timedelta(minutes=10)
        s.commit()
    page = alice.get(f"/risk/runs/{run.run_id}").get_data(as_text=True)
    assert "unknown" in element(page, "rm-pnl")
    assert "3,000.00" not in element(page, "rm-pnl")
    assert 'data-unknown="true"' in element(page, "rm-unknown")
    assert "P&amp;L unknown: 1 open leg(s)" in element(page, "rm-unknown")
    assert "10 min ago" in text_of(element(page, "rm-data"))
    index = alice.get("/risk/").get_data(as_text=True)
    assert "unknown" in element(index, f"risk-run-{run.run_id}")


def test_mtm_json_gives_chart_points_oldest_first(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Condor J", max_loss=Decimal("5000"), max_profit=None)
    with env.database.session() as s:
        for seconds, pnl in ((20, "-150.25"), (0, "10.00"), (10, "1200.50")):
            s.add(RunPnlSample(run_id=run.run_id, at=START + timedelta(seconds=seconds), pnl=Decimal(pnl)))
        s.commit()
    response = alice.get(f"/risk/runs/{run.run_id}/mtm.json")
    assert response.status_code == 200 and response.is_json
    body = response.get_json()
    base = int(START.timestamp())
    assert body == {
        "run_id": run.run_id,
        "points": [
            {"time": base, "value": 10.0},
            {"time": base + 10, "value": 1200.5},
            {"time": base + 20, "value": -150.25},
        ],
        "max_loss": "5000.00",
        "max_profit": None,
    }
    empty = make_run(env, "alice", "Condor E", accounts=1)
    assert alice.get(f"/risk/runs/{empty.run_id}/mtm.json").get_json()["points"] == []


def test_another_users_run_is_404_everywhere(env: WebEnv, alice: FlaskClient) -> None:
    signed_in(env, "bob")
    theirs = make_run(env, "bob", "Bob's condor", accounts=1)
    add_event(
        env, theirs, theirs.executions[0], event_type="max_loss", minutes=1, action_taken="exit_initiated"
    )
    for path in (f"/risk/runs/{theirs.run_id}", f"/risk/runs/{theirs.run_id}/mtm.json", "/risk/runs/999999"):
        assert alice.get(path).status_code == 404, path
    json_404 = alice.get(f"/risk/runs/{theirs.run_id}/mtm.json", headers={"Accept": "application/json"})
    assert json_404.status_code == 404 and json_404.get_json()["status"] == 404
    page = alice.get("/risk/").get_data(as_text=True)
    assert "Bob" not in page and 'id="risk-empty"' in page
    assert "No risk events yet" in page


def test_run_page_links_to_its_risk_monitor(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Condor L", accounts=1)
    page = alice.get(f"/strategies/{run.strategy_id}/run/{run.run_id}").get_data(as_text=True)
    assert f'id="run-risk-link" href="/risk/runs/{run.run_id}"' in page
    assert alice.get(f"/risk/runs/{run.run_id}").status_code == 200
