"""Preview & execute pages (issue 11 item 2) through the Flask client, on SQLite and PostgreSQL: the page
queues one ``preview_strategy`` command per page token (CSRF-checked), its live region shows
"Resolving…" and then the preview the engine wrote (stops polling once finished), Execute queues one
``execute_strategy`` command per token only when confirmed, another user's strategy or command is a
404, and a signed-out poll gets 401 + HX-Redirect. No route calls a broker: the engine's result is
written here as the StrategyResolver would write it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from flask.testing import FlaskClient
from sqlalchemy import select

from algomirror.broker.client import RetryPolicy
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import EngineCommand, Strategy, StrategyLeg, StrategyRun
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.planning import PlannedExecution, plan_run
from algomirror.engine.resolution import EXECUTE_STRATEGY, PREVIEW_STRATEGY, StrategyResolver
from algomirror.security import SecretBox
from tests.factories import make_account
from tests.integration.web_support import START, WebEnv, csrf_token, make_env, signed_in
from tests.sim_fixtures import SIM_START, SimHandle

POLL = {"HX-Request": "true", "X-AlgoMirror-Poll": "1"}
TOKEN_RE = re.compile(r'name="command_token" value="([^"]+)"')


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


def make_strategy(env: WebEnv, username: str, name: str = "Straddle", *, active: bool = True) -> int:
    uid = env.user(username).id
    with env.database.session() as s:
        account = make_account(s, uid, f"{name} acct")
        strategy = Strategy(
            user_id=uid, name=name, is_active=active, selected_accounts=[{"account_id": account.id}]
        )
        for n, option_type in enumerate(("CE", "PE"), start=1):
            strategy.legs.append(
                StrategyLeg(
                    leg_number=n,
                    instrument="NIFTY",
                    product_type="options",
                    expiry="current_week",
                    action="SELL",
                    option_type=option_type,
                    strike_selection="ATM",
                )
            )
        s.add(strategy)
        s.flush()
        return strategy.id


def commands(env: WebEnv, kind: str) -> list[EngineCommand]:
    with env.database.session_factory() as s:
        return list(
            s.scalars(select(EngineCommand).where(EngineCommand.kind == kind).order_by(EngineCommand.id))
        )


def queue_preview(client: FlaskClient, strategy_id: int) -> tuple[Any, str]:
    page = f"/strategies/{strategy_id}/preview"
    html = client.get(page).get_data(as_text=True)
    match = TOKEN_RE.search(html)
    assert match, html[:2000]
    token = match.group(1)
    data = {"csrf_token": csrf_token(client, page), "command_token": token}
    return client.post(page, data=data), token


def finish_preview(env: WebEnv, command_id: int, leg_ids: list[int], account_id: int) -> None:
    """What the StrategyResolver writes for a resolved short straddle on one account."""
    rows = [
        {
            "leg_id": leg_id,
            "account_id": account_id,
            "account_name": "acct",
            "lots": 1,
            "quantity": 65,
            "slices": [65],
            "estimated_margin": "160000.00",
            "status": "ok",
            "reason": None,
        }
        for leg_id in leg_ids
    ]
    preview = {
        "strategy_id": 0,
        "strategy_name": "Straddle",
        "resolved_at": "2026-11-25T05:00:00+00:00",
        "feed_account": {"id": account_id, "name": "acct"},
        "instruments": {"NIFTY": {"spot": "26012.35", "atm": "26000", "error": None}},
        "legs": [
            {
                "leg_id": leg_id,
                "leg_number": n,
                "instrument": "NIFTY",
                "action": "SELL",
                "kind": kind,
                "selection": "ATM",
                "exchange": "NFO",
                "expiry": "2026-12-01",
                "strike": "26000",
                "symbol": f"NIFTY01DEC2626000{kind}",
                "ltp": "101.25",
                "lot_size": 65,
                "freeze": 1800,
                "error": None,
                "blocked": None,
                "warnings": ["naked short: no BUY hedges this SELL leg"],
            }
            for n, (leg_id, kind) in enumerate(zip(leg_ids, ("CE", "PE"), strict=True), start=1)
        ],
        "accounts": [
            {
                "account_id": account_id,
                "name": "acct",
                "status": "ok",
                "reason": None,
                "available_funds": "10000000.00",
                "estimated_margin": "320000.00",
                "warnings": [],
            }
        ],
        "rows": rows,
        "errors": [],
        "warnings": [],
        "open_run": None,
        "plannable": 2,
    }
    with env.database.session() as s:
        row = s.get(EngineCommand, command_id)
        assert row is not None
        row.status, row.result = "done", {"preview": preview}


def _ids(env: WebEnv, strategy_id: int) -> tuple[list[int], int]:
    with env.database.session_factory() as s:
        strategy = s.get(Strategy, strategy_id)
        assert strategy is not None
        return [leg.id for leg in strategy.legs], strategy.selected_accounts[0]["account_id"]  # type: ignore[index]


def test_preview_queues_one_command_per_page_token_and_shows_the_result(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    sid = make_strategy(env, "alice")
    response, token = queue_preview(alice, sid)
    assert response.status_code == 303
    [command] = commands(env, PREVIEW_STRATEGY)
    assert command.payload == {"strategy_id": sid} and command.token == token and command.status == "pending"
    assert response.headers["Location"].endswith(f"/strategies/{sid}/preview?command={command.id}")
    # The same form twice (a double click) is the same command.
    page = f"/strategies/{sid}/preview"
    again = alice.post(page, data={"csrf_token": csrf_token(alice, page), "command_token": token})
    assert again.status_code == 303 and len(commands(env, PREVIEW_STRATEGY)) == 1

    live = f"/strategies/{sid}/preview/{command.id}/live"
    pending = alice.get(live, headers=POLL)
    assert pending.status_code == 200 and "Resolving…" in pending.get_data(as_text=True)
    assert "Still waiting for the engine" not in pending.get_data(as_text=True)
    env.clock.advance(timedelta(seconds=20))  # nobody claimed it: the page says the engine may be down
    late = alice.get(live, headers=POLL).get_data(as_text=True)
    assert "Resolving…" in late and "Still waiting for the engine" in late

    legs, account_id = _ids(env, sid)
    finish_preview(env, command.id, legs, account_id)
    done = alice.get(live, headers=POLL)
    html = done.get_data(as_text=True)
    assert done.status_code == 286  # finished: htmx stops polling
    assert "NIFTY01DEC2626000CE" in html and "NIFTY01DEC2626000PE" in html
    assert f'id="pv-l{legs[0]}-a{account_id}"' in html and "naked short" in html
    assert "Est. margin" in html and "1,60,000.00" in html
    assert 'id="pv-execute-form"' in html and 'name="confirm"' in html


def test_htmx_post_returns_the_live_region(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    sid = make_strategy(env, "alice")
    page = f"/strategies/{sid}/preview"
    html = alice.get(page).get_data(as_text=True)
    assert 'hx-trigger="load"' in html  # the page queues its preview as soon as it loads
    token = TOKEN_RE.search(html).group(1)  # type: ignore[union-attr]
    response = alice.post(
        page,
        data={"csrf_token": csrf_token(alice, page), "command_token": token},
        headers={"HX-Request": "true"},
    )
    body = response.get_data(as_text=True)
    [command] = commands(env, PREVIEW_STRATEGY)
    assert response.status_code == 200 and 'id="preview-live"' in body and "Resolving…" in body
    assert f"/preview/{command.id}/live" in body and "X-AlgoMirror-Poll" in body
    assert response.headers["HX-Replace-Url"].endswith(f"?command={command.id}")


def test_preview_refuses_a_post_without_csrf(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    sid = make_strategy(env, "alice")
    response = alice.post(f"/strategies/{sid}/preview", data={"command_token": "t-1"})
    assert response.status_code == 400 and commands(env, PREVIEW_STRATEGY) == []
    execute = alice.post(f"/strategies/{sid}/execute", data={"command_token": "t-2", "confirm": "yes"})
    assert execute.status_code in (303, 400) and commands(env, EXECUTE_STRATEGY) == []


def test_another_users_strategy_and_command_are_404(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    bob = signed_in(env, "bob")
    sid = make_strategy(env, "alice")
    queue_preview(alice, sid)
    [command] = commands(env, PREVIEW_STRATEGY)
    assert bob.get(f"/strategies/{sid}/preview").status_code == 404
    assert bob.get(f"/strategies/{sid}/preview/{command.id}/live", headers=POLL).status_code == 404
    token = csrf_token(bob, "/strategies/")
    assert (
        bob.post(f"/strategies/{sid}/preview", data={"csrf_token": token, "command_token": "b"}).status_code
        == 404
    )
    data = {"csrf_token": token, "command_token": "b2", "confirm": "yes"}
    assert bob.post(f"/strategies/{sid}/execute", data=data).status_code == 404
    # Bob's own strategy does not open Alice's command either.
    own = make_strategy(env, "bob", "Bob's")
    assert bob.get(f"/strategies/{own}/preview/{command.id}/live", headers=POLL).status_code == 404
    assert bob.get(f"/strategies/{own}/preview?command={command.id}").status_code == 404


def test_a_signed_out_poll_gets_401_and_a_redirect(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    sid = make_strategy(env, "alice")
    queue_preview(alice, sid)
    [command] = commands(env, PREVIEW_STRATEGY)
    anonymous = env.client()
    response = anonymous.get(
        f"/strategies/{sid}/preview/{command.id}/live",
        headers={**POLL, "HX-Current-URL": f"http://localhost/strategies/{sid}/preview"},
    )
    assert response.status_code == 401 and "/login" in response.headers["HX-Redirect"]
    assert anonymous.get(f"/strategies/{sid}/preview").status_code in (302, 303)


def done_preview(env: WebEnv, client: FlaskClient, strategy_id: int) -> int:
    """Queue a preview through the page and finish it as the engine would; its command id."""
    before = {c.id for c in commands(env, PREVIEW_STRATEGY)}
    queue_preview(client, strategy_id)
    [command] = [c for c in commands(env, PREVIEW_STRATEGY) if c.id not in before]
    legs, account_id = _ids(env, strategy_id)
    finish_preview(env, command.id, legs, account_id)
    return command.id


def execute_form(client: FlaskClient, strategy_id: int, preview_id: int, **more: str) -> dict[str, Any]:
    page = f"/strategies/{strategy_id}/preview?command={preview_id}"
    return {"csrf_token": csrf_token(client, page), "preview_command": preview_id, **more}


def test_execute_needs_the_confirmation_and_queues_one_command_per_preview(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    sid = make_strategy(env, "alice")
    preview_id = done_preview(env, alice, sid)
    html = alice.get(f"/strategies/{sid}/preview?command={preview_id}").get_data(as_text=True)
    assert 'id="pv-execute-form"' in html and 'id="pv-confirm-error"' not in html

    # Without the tick: the preview again (400) with the error by the checkbox, nothing queued.
    response = alice.post(f"/strategies/{sid}/execute", data=execute_form(alice, sid, preview_id))
    text = response.get_data(as_text=True)
    assert response.status_code == 400 and commands(env, EXECUTE_STRATEGY) == []
    assert 'id="pv-execute-form"' in text and 'id="preview-error"' not in text
    box = re.search(r'<input type="checkbox" id="pv-confirm"[^>]*>', text)
    assert (
        box
        and 'aria-describedby="pv-confirm-error"' in box.group(0)
        and 'aria-invalid="true"' in box.group(0)
    )
    assert re.search(r'<p class="error" id="pv-confirm-error"[^>]*>Tick the confirmation', text)
    assert "Tick the confirmation" not in alice.get("/strategies/").get_data(as_text=True)  # no flash

    confirmed = execute_form(alice, sid, preview_id, confirm="yes")
    first = alice.post(f"/strategies/{sid}/execute", data=confirmed)
    second = alice.post(f"/strategies/{sid}/execute", data=confirmed)  # a double submit
    [execute] = commands(env, EXECUTE_STRATEGY)
    assert execute.payload == {"strategy_id": sid, "source": "manual", "scheduled_for": None}
    assert execute.token == f"execute:{preview_id}" and execute.status == "pending"
    assert first.status_code == second.status_code == 303
    target = first.headers["Location"]
    assert target.endswith(f"/strategies/{sid}/run") or f"/strategies/{sid}/preview" in target


def test_one_execute_per_preview_and_none_while_an_execute_is_in_flight(env: WebEnv) -> None:
    """Regression: a second Execute (another tab, or the page reloaded for a fresh token) was queued
    while the first execute_strategy was still pending; when the first run closed fast (all rejected),
    the second placed a new set of orders."""
    alice = signed_in(env, "alice")
    sid = make_strategy(env, "alice")
    first_preview = done_preview(env, alice, sid)
    second_preview = done_preview(env, alice, sid)  # another tab
    page = f"/strategies/{sid}/preview?command={first_preview}"
    assert alice.get(page).get_data(as_text=True).count("command_token") == 1  # "Resolve again" only
    execute = f"/strategies/{sid}/execute"
    assert alice.post(execute, data=execute_form(alice, sid, first_preview, confirm="yes")).status_code == 303
    [queued] = commands(env, EXECUTE_STRATEGY)

    # Still pending: the other tab's preview says so instead of offering Execute, and refuses it.
    other = alice.get(f"/strategies/{sid}/preview?command={second_preview}").get_data(as_text=True)
    assert 'id="pv-execute-form"' not in other and 'data-reason="in-flight"' in other
    assert f"request #{queued.id}" in other and "still pending" in other
    refused = alice.post(execute, data=execute_form(alice, sid, second_preview, confirm="yes"))
    assert refused.status_code == 303 and [c.id for c in commands(env, EXECUTE_STRATEGY)] == [queued.id]
    assert "still pending" in alice.get(refused.headers["Location"]).get_data(as_text=True)

    # Reloading the executed preview offers no new Execute: it was executed once.
    reloaded = alice.get(page).get_data(as_text=True)
    assert 'id="pv-execute-form"' not in reloaded and 'data-reason="executed"' in reloaded

    # The first planned a run that closed at once (every entry rejected): the executed preview still
    # queues nothing, however it is posted again.
    with env.database.session() as s:
        row = s.get(EngineCommand, queued.id)
        assert row is not None
        row.status, row.result = "done", {"run_id": 0}
    again = alice.post(execute, data=execute_form(alice, sid, first_preview, confirm="yes"))
    assert again.status_code == 303 and len(commands(env, EXECUTE_STRATEGY)) == 1
    assert 'data-reason="executed"' in alice.get(page).get_data(as_text=True)

    # A preview resolved after that can be executed (once).
    other = alice.get(f"/strategies/{sid}/preview?command={second_preview}").get_data(as_text=True)
    assert 'id="pv-execute-form"' in other
    assert (
        alice.post(execute, data=execute_form(alice, sid, second_preview, confirm="yes")).status_code == 303
    )
    assert [c.token for c in commands(env, EXECUTE_STRATEGY)] == [
        f"execute:{first_preview}",
        f"execute:{second_preview}",
    ]
    # A made-up form (no preview named, or another's token) queues nothing.
    bare = {"csrf_token": csrf_token(alice, "/strategies/"), "command_token": "t-two", "confirm": "yes"}
    assert alice.post(execute, data=bare).status_code == 303
    assert len(commands(env, EXECUTE_STRATEGY)) == 2


def test_a_finished_preview_region_does_not_poll_or_issue_a_token(env: WebEnv) -> None:
    """Regression: a finished preview's region kept its polling trigger, polled once more and swapped in
    a new Execute token."""
    alice = signed_in(env, "alice")
    sid = make_strategy(env, "alice")
    queue_preview(alice, sid)
    [command] = commands(env, PREVIEW_STRATEGY)
    page = f"/strategies/{sid}/preview?command={command.id}"
    live = f"/strategies/{sid}/preview/{command.id}/live"
    resolving = alice.get(page).get_data(as_text=True)
    region = re.search(r'<div id="preview-live"[^>]*>', resolving)
    assert region and f'hx-get="{live}"' in region.group(0) and "hx-trigger" in region.group(0)

    legs, account_id = _ids(env, sid)
    finish_preview(env, command.id, legs, account_id)
    finished = alice.get(page).get_data(as_text=True)
    region = re.search(r'<div id="preview-live"[^>]*>', finished)
    assert region and "hx-get" not in region.group(0) and "hx-trigger" not in region.group(0)
    assert 'data-finished="yes"' in region.group(0)
    # The last poll of a page that was still resolving: 286, and the same form as a reload gives.
    form = re.compile(r'<form method="post" action="[^"]*/execute".*?</form>', re.S)
    polled = alice.get(live, headers=POLL)
    assert polled.status_code == 286
    shown = [
        form.search(finished),
        form.search(polled.get_data(as_text=True)),
        form.search(alice.get(page).get_data(as_text=True)),
    ]
    # The CSRF token is signed with the current second, so it differs across a second boundary.
    csrf = re.compile(r'name="csrf_token" value="[^"]*"')
    assert all(shown) and len({csrf.sub("", m.group(0)) for m in shown if m}) == 1
    assert "command_token" not in shown[0].group(0)  # type: ignore[union-attr]


def test_the_strategy_list_links_to_preview_for_active_strategies(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    active = make_strategy(env, "alice", "On")
    inactive = make_strategy(env, "alice", "Off", active=False)
    html = alice.get("/strategies/").get_data(as_text=True)
    assert f'href="/strategies/{active}/preview"' in html
    assert f'href="/strategies/{inactive}/preview"' not in html


async def test_a_real_preview_from_the_engine_renders_and_executes(
    env: WebEnv, simulator_session: SimHandle
) -> None:
    """Web → command → the engine's resolver on the paper exchange → the page shows its result."""
    sim = simulator_session
    alice = signed_in(env, "alice")
    box = SecretBox(Fernet.generate_key())
    uid = env.user("alice").id
    with env.database.session() as s:
        accounts = [
            make_account(
                s, uid, f"Paper {i}", host_url=sim.rest_url, api_key_encrypted=box.encrypt(sim.api_keys[i])
            )
            for i in range(2)
        ]
        legs = [
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
                (("BUY", "CE", "OTM", 3), ("SELL", "CE", "ATM", 0), ("SELL", "PE", "ATM", 0)), start=1
            )
        ]
        strategy = Strategy(
            user_id=uid, name="Real", selected_accounts=[{"account_id": a.id} for a in accounts], legs=legs
        )
        s.add(strategy)
        s.flush()
        sid = strategy.id
    queue_preview(alice, sid)
    [command] = commands(env, PREVIEW_STRATEGY)
    registry = ClientRegistry(retry=RetryPolicy(attempts=1))
    resolver = StrategyResolver(env.database, registry, box.decrypt, epoch=1, clock=FakeClock(SIM_START))
    try:
        assert await resolver.run_command(command.id)
    finally:
        await registry.aclose()
    response = alice.get(f"/strategies/{sid}/preview/{command.id}/live", headers=POLL)
    html = response.get_data(as_text=True)
    assert response.status_code == 286, html[:3000]
    assert 'id="pv-execute-form"' in html
    for leg in legs:
        for account in accounts:
            assert f'id="pv-l{leg.id}-a{account.id}" data-status="ok"' in html
    assert html.count("naked short") == 1  # the PE short has no PE hedge
    assert "NIFTY01DEC26" in html and "Paper 0" in html

    data = execute_form(alice, sid, command.id, confirm="yes")
    assert alice.post(f"/strategies/{sid}/execute", data=data).status_code == 303
    [execute] = commands(env, EXECUTE_STRATEGY)
    registry = ClientRegistry(retry=RetryPolicy(attempts=1))
    resolver = StrategyResolver(env.database, registry, box.decrypt, epoch=1, clock=FakeClock(SIM_START))
    try:
        assert await resolver.run_command(execute.id)
    finally:
        await registry.aclose()
    [done] = commands(env, EXECUTE_STRATEGY)
    assert done.status == "done" and done.result is not None, done.error
    with env.database.session_factory() as s:
        run = s.get(StrategyRun, done.result["run_id"])
        assert run is not None and run.strategy_id == sid and run.status == "entering"
        assert len(run.executions) == 6


def test_execute_while_a_run_is_open_queues_nothing(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    sid = make_strategy(env, "alice")
    legs, account_id = _ids(env, sid)
    with env.database.session() as s:
        planned = [PlannedExecution(legs[0], account_id, "NIFTY01DEC2626000CE", "NFO", "MIS", 65, "NIFTY")]
        run_id = plan_run(s, sid, planned, now=START).id
    preview_id = done_preview(env, alice, sid)  # resolved before the run opened (open_run: None)
    shown = alice.get(f"/strategies/{sid}/preview?command={preview_id}").get_data(as_text=True)
    assert 'id="pv-execute-form"' not in shown and 'data-reason="open-run"' in shown
    response = alice.post(
        f"/strategies/{sid}/execute", data=execute_form(alice, sid, preview_id, confirm="yes")
    )
    assert response.status_code == 303 and commands(env, EXECUTE_STRATEGY) == []
    followed = alice.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Run #{run_id}" in followed and "still open" in followed
