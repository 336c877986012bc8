"""The kill switch page (/risk/kill, PRODUCT §6.10): the daily loss limit form (saved, logged, errors
inline), Trip / Reset / Flatten confirmations queueing one ``kill_switch`` command per token, CSRF on every
form, another user's account a 404. The engine side is tested in test_kill_switch.py."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from algomirror.db.models import EngineCommand, TradingAccount
from tests.factories import make_account
from tests.integration.test_web_strategy_runs import make_run, set_execution, set_run
from tests.integration.web_support import START, WebEnv, make_env, signed_in

BASE = "/risk/kill"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


def add_account(env: WebEnv, username: str, name: str, **fields: Any) -> int:
    user = env.user(username)
    with env.database.session() as s:
        return make_account(s, user.id, name, **fields).id


def form_fields(client: FlaskClient, page: str, action: str) -> dict[str, str]:
    """The hidden and text inputs of the form posting to ``action`` on ``page``."""
    text = client.get(page).get_data(as_text=True)
    for form in re.findall(r"<form method=\"post\".*?</form>", text, re.S):
        if f'action="{action}"' in form:
            fields = {}
            for tag in re.findall(r"<input [^>]*>", form):
                name = re.search(r'name="([^"]+)"', tag)
                value = re.search(r'value="([^"]*)"', tag)
                if 'type="hidden"' in tag and name:
                    fields[name.group(1)] = html.unescape(value.group(1) if value else "")
            return fields
    raise AssertionError(f"no form posting to {action} on {page}: {text[:3000]}")


def commands(env: WebEnv) -> list[EngineCommand]:
    with env.database.session_factory() as s:
        return list(
            s.scalars(
                select(EngineCommand).where(EngineCommand.kind == "kill_switch").order_by(EngineCommand.id)
            )
        )


def stored_limit(env: WebEnv, account_id: int) -> Decimal | None:
    with env.database.session_factory() as s:
        row = s.get(TradingAccount, account_id)
        assert row is not None
        return row.daily_loss_limit


def test_the_page_lists_only_my_accounts_with_their_state(env: WebEnv, alice: FlaskClient) -> None:
    signed_in(env, "bob")
    mine = add_account(env, "alice", "Alice main")
    limited = add_account(env, "alice", "Alice limited", daily_loss_limit=Decimal("2500"))
    tripped = add_account(env, "alice", "Alice tripped")
    add_account(env, "bob", "Bob secret")
    with env.database.session() as s:
        s.execute(
            update(TradingAccount)
            .where(TradingAccount.id == tripped)
            .values(kill_switch_at=env.clock.now(), kill_switch_reason="daily loss limit ₹1,000.00 reached")
        )
    reply = alice.get(f"{BASE}/")
    text = reply.get_data(as_text=True)
    assert reply.status_code == 200
    assert "Bob secret" not in text
    row = re.search(rf'<tr id="kill-a{mine}".*?</tr>', text, re.S)
    assert row and "No limit" in row.group(0) and f'id="kill-trip-{mine}"' in row.group(0)
    row = re.search(rf'<tr id="kill-a{limited}".*?</tr>', text, re.S)
    assert row and "Armed: trips at −₹2,500.00" in row.group(0) and 'value="2500.00"' in row.group(0)
    row = re.search(rf'<tr id="kill-a{tripped}".*?</tr>', text, re.S)
    assert row and "Tripped" in row.group(0) and "because daily loss limit ₹1,000.00 reached" in row.group(0)
    assert f'id="kill-reset-{tripped}"' in row.group(0) and 'id="kill-reset-all"' in text
    # No open position and nothing exited today: the database knows today's P&L is 0.
    assert re.search(rf'data-ks-pnl="{mine}">\s*<span class="zero">0.00</span>', text)


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("abc", "The daily loss limit must be a number."),
        ("0", "The daily loss limit must be greater than 0."),
        ("-5", "The daily loss limit must be greater than 0."),
        ("12.345", "The daily loss limit allows at most 2 decimals."),
        ("100000000.01", "The daily loss limit must be at most ₹10,00,00,000."),
    ],
)
def test_an_invalid_limit_is_refused_inline(env: WebEnv, alice: FlaskClient, typed: str, error: str) -> None:
    account = add_account(env, "alice", "Main", daily_loss_limit=Decimal("500"))
    action = f"{BASE}/{account}/limit"
    fields = form_fields(alice, f"{BASE}/", action)
    reply = alice.post(action, data={**fields, f"a{account}-daily_loss_limit": typed})
    text = html.unescape(reply.get_data(as_text=True))
    assert reply.status_code == 400
    assert f'id="a{account}-daily_loss_limit-error"' in text and error in text
    assert f'id="a{account}-daily_loss_limit"' in text and 'aria-invalid="true"' in text
    assert f'value="{typed}"' in text  # what was typed stays in the field
    assert stored_limit(env, account) == Decimal("500.00")


def test_a_limit_is_saved_logged_and_removed_when_blank(env: WebEnv, alice: FlaskClient) -> None:
    account = add_account(env, "alice", "Main")
    action = f"{BASE}/{account}/limit"
    reply = alice.post(
        action, data={**form_fields(alice, f"{BASE}/", action), f"a{account}-daily_loss_limit": "1,500.5"}
    )
    assert reply.status_code == 303 and reply.headers["Location"].endswith(f"{BASE}/")
    assert stored_limit(env, account) == Decimal("1500.50")
    assert "daily loss limit set to ₹1,500.50" in html.unescape(alice.get(f"{BASE}/").get_data(as_text=True))
    reply = alice.post(
        action, data={**form_fields(alice, f"{BASE}/", action), f"a{account}-daily_loss_limit": ""}
    )
    assert reply.status_code == 303 and stored_limit(env, account) is None
    assert env.actions("alice").count("kill_switch_limit_changed") == 2
    # Without the CSRF token: refused, nothing changed.
    reply = alice.post(action, data={f"a{account}-daily_loss_limit": "100"})
    assert reply.status_code == 400 and stored_limit(env, account) is None


def test_trip_asks_first_then_queues_one_command_per_token(env: WebEnv, alice: FlaskClient) -> None:
    account = add_account(env, "alice", "Main")
    page = alice.get(f"{BASE}/{account}/trip").get_data(as_text=True)
    assert "Trip the kill switch of “Main”?" in page and 'id="kill-yes"' in page
    assert commands(env) == []  # the confirmation page changes nothing
    action = f"{BASE}/{account}/trip"
    fields = form_fields(alice, action, action)
    assert alice.post(action, data={"command_token": fields["command_token"]}).status_code == 400  # no CSRF
    assert commands(env) == []
    for _ in range(2):  # a double submit is one command
        reply = alice.post(action, data=fields)
        assert reply.status_code == 303
    [command] = commands(env)
    assert command.payload == {"action": "trip", "account_id": account} and command.status == "pending"
    assert env.actions("alice").count("kill_switch_trip_requested") == 1
    text = alice.get(f"{BASE}/").get_data(as_text=True)
    assert f'id="kill-pending-{account}"' in text and "Queued: trip" in text


def test_reset_of_a_tripped_account_and_of_one_that_is_not(env: WebEnv, alice: FlaskClient) -> None:
    tripped = add_account(env, "alice", "Tripped")
    armed = add_account(env, "alice", "Armed")
    with env.database.session() as s:
        s.execute(
            update(TradingAccount)
            .where(TradingAccount.id == tripped)
            .values(kill_switch_at=env.clock.now(), kill_switch_reason="tripped by alice")
        )
    page = alice.get(f"{BASE}/{armed}/reset").get_data(as_text=True)
    assert 'id="kill-nothing"' in page and 'id="kill-yes"' not in page
    action = f"{BASE}/{tripped}/reset"
    page = alice.get(action).get_data(as_text=True)
    assert 'id="kill-reason">tripped by alice<' in page
    reply = alice.post(action, data=form_fields(alice, action, action))
    assert reply.status_code == 303
    [command] = commands(env)
    assert command.payload == {"action": "reset", "account_id": tripped}
    assert "kill_switch_reset_requested" in env.actions("alice")
    # Reset every account: only what is tripped is named.
    page = alice.get(f"{BASE}/reset-all").get_data(as_text=True)
    assert "Tripped" in page and "Armed" not in page
    action = f"{BASE}/reset-all"
    assert alice.post(action, data=form_fields(alice, action, action)).status_code == 303
    assert [c.payload for c in commands(env)][-1] == {"action": "reset_all"}


def test_flatten_needs_the_box_ticked_and_the_word_typed(env: WebEnv, alice: FlaskClient) -> None:
    add_account(env, "alice", "One")
    add_account(env, "alice", "Two")
    action = f"{BASE}/flatten"
    page = alice.get(action).get_data(as_text=True)
    assert "Flatten everything and stop new entries?" in page and "all 2 account(s)" in page
    fields = form_fields(alice, action, action)
    reply = alice.post(action, data={**fields, "confirm_text": "flat"})
    text = reply.get_data(as_text=True)
    assert reply.status_code == 400
    assert 'id="understand-error"' in text and "Tick the box to confirm." in text
    assert 'id="confirm_text-error"' in text and "Type FLATTEN" in text
    assert commands(env) == []
    reply = alice.post(action, data={**fields, "understand": "y", "confirm_text": "flatten"})
    assert reply.status_code == 303
    [command] = commands(env)
    assert command.payload == {"action": "trip_all"}
    assert "kill_switch_trip_all_requested" in env.actions("alice")
    assert alice.post(action, data={"understand": "y", "confirm_text": "FLATTEN"}).status_code == 400  # CSRF


def test_another_users_account_is_a_404(env: WebEnv, alice: FlaskClient) -> None:
    signed_in(env, "bob")
    theirs = add_account(env, "bob", "Bob's")
    add_account(env, "alice", "Mine")
    fields = form_fields(alice, f"{BASE}/flatten", f"{BASE}/flatten")
    for path in ("trip", "reset"):
        assert alice.get(f"{BASE}/{theirs}/{path}").status_code == 404
        assert alice.post(f"{BASE}/{theirs}/{path}", data=fields).status_code == 404
    reply = alice.post(f"{BASE}/{theirs}/limit", data={**fields, f"a{theirs}-daily_loss_limit": "5"})
    assert reply.status_code == 404
    assert alice.get(f"{BASE}/999999/trip").status_code == 404
    assert commands(env) == [] and stored_limit(env, theirs) is None


def test_signed_out_goes_to_sign_in(env: WebEnv) -> None:
    reply = env.client().get(f"{BASE}/")
    assert reply.status_code in (302, 303) and "/login" in reply.headers["Location"]


def test_todays_pnl_from_closed_runs_and_waiting_for_the_engine_with_open_ones(
    env: WebEnv, alice: FlaskClient
) -> None:
    closed = make_run(env, "alice", "Closed", accounts=1)
    # BUY PE 100 → 90 and SELL CE 50 → 60, 75 units each: −₹750 twice, exited today.
    for leg, (entry, exit_) in enumerate((("100", "90"), ("50", "60"))):
        set_execution(
            env,
            closed.executions[(0, leg)],
            status="exited",
            filled_quantity=75,
            exited_quantity=75,
            entry_price=Decimal(entry),
            exit_price=Decimal(exit_),
            exit_time=START,
        )
    set_run(env, closed.run_id, status="closed", ended_at=START)
    opened = make_run(env, "alice", "Open", accounts=1)
    set_execution(
        env, opened.executions[(0, 1)], status="active", filled_quantity=75, entry_price=Decimal("50")
    )
    text = alice.get(f"{BASE}/").get_data(as_text=True)
    cell = re.search(rf'data-ks-pnl="{closed.accounts[0]}">(.*?)</td>', text, re.S)
    assert cell and '<span class="negative">-1,500.00</span>' in cell.group(1)
    cell = re.search(rf'data-ks-pnl="{opened.accounts[0]}">(.*?)</td>', text, re.S)
    assert cell and "waiting for the engine" in cell.group(1)
    # The page subscribes to the engine's figures for this user.
    assert f'data-user-id="{env.user("alice").id}"' in text and "js/kill_switch.js" in text


def test_the_state_fragment_shows_only_my_accounts_and_their_state(env: WebEnv, alice: FlaskClient) -> None:
    signed_in(env, "bob")
    armed = add_account(env, "alice", "Alice armed", daily_loss_limit=Decimal("2500"))
    tripped = add_account(env, "alice", "Alice tripped")
    theirs = add_account(env, "bob", "Bob secret")
    with env.database.session() as s:
        s.execute(
            update(TradingAccount)
            .where(TradingAccount.id.in_((tripped, theirs)))
            .values(kill_switch_at=env.clock.now(), kill_switch_reason="daily loss limit ₹1,000.00 reached")
        )
    reply = alice.get(f"{BASE}/state", headers={"X-AlgoMirror-Poll": "1", "HX-Request": "true"})
    text = reply.get_data(as_text=True)
    assert reply.status_code == 200 and reply.headers["Cache-Control"] == "no-store"
    assert '<div id="kill-state" data-pending="0">' in text
    assert "Bob secret" not in text and f'id="kill-a{theirs}"' not in text
    assert f'id="kill-state-{theirs}"' not in text
    row = re.search(rf'<tr id="kill-a{tripped}"[^>]*data-state="tripped">.*?</tr>', text, re.S)
    assert row and "Tripped" in row.group(0) and "because daily loss limit ₹1,000.00 reached" in row.group(0)
    assert f'id="kill-reset-{tripped}"' in row.group(0) and f'id="kill-trip-{tripped}"' not in row.group(0)
    row = re.search(rf'<tr id="kill-a{armed}"[^>]*data-state="armed">.*?</tr>', text, re.S)
    assert row and "Armed: trips at −₹2,500.00" in row.group(0) and f'id="kill-trip-{armed}"' in row.group(0)
    assert 'id="kill-reset-all"' in text and 'id="as-of"' in text
    # Neither the live P&L nor the limit form is in it: the page keeps those as they are.
    assert "data-ks-pnl" not in text and "<form" not in text
    # The page's parts carry the same ids, so the script can swap them in.
    page = alice.get(f"{BASE}/").get_data(as_text=True)
    for part in (f"kill-state-{tripped}", f"kill-act-{tripped}", "kill-global-live", "as-of"):
        assert f'id="{part}"' in page
    assert f'data-state-url="{BASE}/state"' in page


def test_the_state_fragment_follows_a_queued_command_until_the_engine_ran_it(
    env: WebEnv, alice: FlaskClient
) -> None:
    account = add_account(env, "alice", "Main")
    action = f"{BASE}/{account}/trip"
    assert alice.post(action, data=form_fields(alice, action, action)).status_code == 303
    text = alice.get(f"{BASE}/state").get_data(as_text=True)
    assert '<div id="kill-state" data-pending="1">' in text
    assert f'id="kill-pending-{account}"' in text and "Queued: trip" in text
    row = re.search(rf'<tr id="kill-a{account}"[^>]*data-state="off">', text)
    assert row
    # What the engine does when it runs the command: the fragment shows it tripped, nothing pending.
    with env.database.session() as s:
        s.execute(
            update(TradingAccount)
            .where(TradingAccount.id == account)
            .values(kill_switch_at=env.clock.now(), kill_switch_reason="tripped by alice")
        )
        s.execute(update(EngineCommand).where(EngineCommand.kind == "kill_switch").values(status="done"))
    text = alice.get(f"{BASE}/state").get_data(as_text=True)
    assert '<div id="kill-state" data-pending="0">' in text and "Queued:" not in text
    assert re.search(rf'<tr id="kill-a{account}"[^>]*data-state="tripped">', text)
    assert "because tripped by alice" in text


def test_the_state_fragment_needs_a_sign_in(env: WebEnv) -> None:
    client = env.client()
    reply = client.get(f"{BASE}/state")
    assert reply.status_code in (302, 303) and "/login" in reply.headers["Location"]
    # The page's script asks as htmx does: 401 and where to sign in, never the login page as the state.
    reply = client.get(
        f"{BASE}/state",
        headers={
            "HX-Request": "true",
            "X-AlgoMirror-Poll": "1",
            "HX-Current-URL": f"http://localhost{BASE}/",
        },
    )
    assert reply.status_code == 401 and reply.headers["HX-Redirect"].startswith("/login")
    assert "kill-state" not in reply.get_data(as_text=True)
