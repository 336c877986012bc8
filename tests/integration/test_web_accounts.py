"""Trading accounts through the web pages: add/edit/delete, primary rules, connection tests, bad input."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.integration.web_support import WebEnv, fake_openalgo, make_env, post_form, signed_in, unused_port

KEY = "alpha-key-0001-WXYZ"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


def form(name: str, **over: Any) -> dict[str, Any]:
    data = {
        "account_name": name,
        "broker": "zerodha",
        "host_url": f"http://127.0.0.1:{unused_port()}",
        "websocket_url": "ws://127.0.0.1:8765",
        "api_key": KEY,
        # Most tests save against a server that is not there: confirmed up front (tests below drop it).
        "save_anyway": "y",
    }
    data.update(over)
    return data


def create(client: FlaskClient, name: str, **over: Any) -> Any:
    return post_form(client, "/accounts/new", form(name, **over), page="/accounts/new")


def ids(env: WebEnv) -> dict[str, int]:
    """Alice's live (not archived) accounts by name."""
    return {a.account_name: a.id for a in env.accounts("alice") if a.archived_at is None}


def primary(env: WebEnv) -> list[str]:
    return [a.account_name for a in env.accounts("alice") if a.is_primary]


def test_create_when_server_unreachable_saves_as_disconnected_with_error(
    env: WebEnv, alice: FlaskClient
) -> None:
    response = create(alice, "Main")
    assert response.status_code == 303
    page = alice.get("/accounts/").get_data(as_text=True)
    assert "saved as disconnected" in page
    account = env.accounts("alice")[0]
    assert account.connection_status == "disconnected" and account.last_error
    assert account.last_error_at is not None and account.last_connected is None
    assert account.api_key_last4 == "WXYZ" and account.is_primary
    assert account.host_url.startswith("http://127.0.0.1:")
    assert {"account_created", "connection_tested", "account_primary_changed"} <= set(env.actions("alice"))


def test_create_when_server_answers_records_connected_broker_and_time(
    env: WebEnv, alice: FlaskClient
) -> None:
    with fake_openalgo(KEY, broker="angel") as host:
        response = create(alice, "Main", host_url=host)
    assert response.status_code == 303
    account = env.accounts("alice")[0]
    assert account.connection_status == "connected"
    assert account.broker == "angel"  # the broker the server reports wins
    assert account.last_connected == env.clock.now()
    assert "₹1,23,456.50" in alice.get("/accounts/").get_data(as_text=True)


def test_create_when_key_rejected_saves_as_auth_failed_with_message(env: WebEnv, alice: FlaskClient) -> None:
    with fake_openalgo("another-key-entirely") as host:
        create(alice, "Main", host_url=host)
    account = env.accounts("alice")[0]
    assert account.connection_status == "auth_failed" and account.last_error


def test_test_connection_when_on_unsaved_form_shows_result_and_saves_nothing(
    env: WebEnv, alice: FlaskClient
) -> None:
    with fake_openalgo(KEY) as host:
        ok = post_form(alice, "/accounts/new/test", form("Main", host_url=host), page="/accounts/new")
    assert ok.status_code == 200 and "Connected to zerodha" in ok.get_data(as_text=True)
    bad = post_form(alice, "/accounts/new/test", form("Main"), page="/accounts/new")
    assert "Connection failed" in bad.get_data(as_text=True)
    # The typed values stay in the form, the key too (for this reply only), so Save needs no second paste.
    assert 'value="Main"' in bad.get_data(as_text=True) and f'value="{KEY}"' in bad.get_data(as_text=True)
    assert KEY not in alice.get("/accounts/new").get_data(as_text=True)
    assert env.accounts("alice") == []
    assert env.actions("alice").count("connection_tested") == 2


def test_test_connection_when_saved_account_records_status(env: WebEnv, alice: FlaskClient) -> None:
    with fake_openalgo(KEY) as host:
        create(alice, "Main", host_url=host)
        env.clock.advance(timedelta(minutes=5))
        account_id = ids(env)["Main"]
        response = post_form(alice, f"/accounts/{account_id}/test", page="/accounts/", follow_redirects=True)
    assert "Connected" in response.get_data(as_text=True)
    assert env.accounts("alice")[0].last_connected == env.clock.now()
    # Server gone: the next test records the failure.
    response = post_form(alice, f"/accounts/{account_id}/test", page="/accounts/", follow_redirects=True)
    account = env.accounts("alice")[0]
    assert account.connection_status == "disconnected" and account.consecutive_failures == 1
    assert "Connection failed" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"account_name": "ab"}, "Account name must be 3–100 characters"),
        ({"account_name": "x" * 10_000}, "Account name must be 3–100 characters"),
        ({"host_url": "not a url"}, "Host URL must start with http:// or https://"),
        ({"host_url": "ftp://127.0.0.1"}, "Host URL must start with http:// or https://"),
        ({"host_url": "http://" + "a" * 10_000}, "Host URL must be at most 200 characters"),
        ({"websocket_url": "http://127.0.0.1:8765"}, "WebSocket URL must start with ws:// or wss://"),
        ({"api_key": ""}, "Enter the account&#39;s OpenAlgo API key"),
        ({"api_key": "short"}, "API key must be 10–256 characters"),
        ({"api_key": "k" * 10_000}, "API key must be 10–256 characters"),
        ({"broker": "notabroker"}, "Not a valid choice"),
    ],
)
def test_create_when_input_is_bad_shows_message_next_to_field_and_saves_nothing(
    env: WebEnv, alice: FlaskClient, over: dict[str, str], message: str
) -> None:
    response = create(alice, "Main", **over)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html
    assert 'aria-invalid="true"' in html and "-error" in html
    assert env.accounts("alice") == []


def test_create_when_name_is_duplicate_in_any_case_refuses_with_clear_message(
    env: WebEnv, alice: FlaskClient
) -> None:
    create(alice, "Main")
    response = create(alice, "MAIN")
    assert response.status_code == 400
    assert "You already have an account with this name" in response.get_data(as_text=True)
    assert len(env.accounts("alice")) == 1
    # Another user may use the same name.
    bob = signed_in(env, "bob")
    assert create(bob, "Main").status_code == 303


def test_edit_when_key_left_empty_keeps_key_and_renames(env: WebEnv, alice: FlaskClient) -> None:
    create(alice, "Main")
    account = env.accounts("alice")[0]
    response = post_form(
        alice,
        f"/accounts/{account.id}/edit",
        form("Renamed", host_url=account.host_url, api_key=""),
        page="/accounts/",
    )
    assert response.status_code == 303
    after = env.accounts("alice")[0]
    assert after.account_name == "Renamed" and after.api_key_encrypted == account.api_key_encrypted
    assert "account_updated" in env.actions("alice")


def test_edit_when_key_changes_encrypts_new_key_and_retests(env: WebEnv, alice: FlaskClient) -> None:
    create(alice, "Main")
    account = env.accounts("alice")[0]
    new_key = "beta-key-0002-ABCD"
    with fake_openalgo(new_key) as host:
        response = post_form(
            alice,
            f"/accounts/{account.id}/edit",
            form("Main", host_url=host, api_key=new_key),
            page="/accounts/",
        )
    assert response.status_code == 303
    after = env.accounts("alice")[0]
    assert after.api_key_last4 == "ABCD" and env.state.box.decrypt(after.api_key_encrypted or "") == new_key
    assert after.connection_status == "connected"


def test_edit_when_name_taken_by_another_own_account_refuses(env: WebEnv, alice: FlaskClient) -> None:
    create(alice, "Main")
    create(alice, "Second")
    second = ids(env)["Second"]
    response = post_form(alice, f"/accounts/{second}/edit", form("main", api_key=""), page="/accounts/")
    assert response.status_code == 400 and "already have an account" in response.get_data(as_text=True)
    assert set(ids(env)) == {"Main", "Second"}


def test_primary_when_accounts_added_first_is_primary_and_switch_clears_old(
    env: WebEnv, alice: FlaskClient
) -> None:
    for name in ("One", "Two", "Three"):
        create(alice, name)
    assert primary(env) == ["One"]
    response = post_form(alice, f"/accounts/{ids(env)['Three']}/primary", page="/accounts/")
    assert response.status_code == 303
    assert primary(env) == ["Three"]
    assert "Backup 1" in alice.get("/accounts/").get_data(as_text=True)


def test_primary_when_deactivated_oldest_active_account_takes_over(env: WebEnv, alice: FlaskClient) -> None:
    for name in ("One", "Two", "Three"):
        create(alice, name)
    post_form(alice, f"/accounts/{ids(env)['One']}/deactivate", page="/accounts/")
    assert primary(env) == ["Two"]
    # An inactive account cannot become the primary.
    response = post_form(
        alice, f"/accounts/{ids(env)['One']}/primary", page="/accounts/", follow_redirects=True
    )
    assert "Activate the account" in response.get_data(as_text=True)
    assert primary(env) == ["Two"]
    post_form(alice, f"/accounts/{ids(env)['One']}/activate", page="/accounts/")
    assert primary(env) == ["Two"]
    assert all(a.is_active for a in env.accounts("alice"))


def test_primary_when_deleted_oldest_active_account_takes_over(env: WebEnv, alice: FlaskClient) -> None:
    for name in ("One", "Two", "Three"):
        create(alice, name)
    post_form(alice, f"/accounts/{ids(env)['Two']}/deactivate", page="/accounts/")
    one = ids(env)["One"]
    confirm = alice.get(f"/accounts/{one}/delete")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.get_data(as_text=True)
    assert post_form(alice, f"/accounts/{one}/delete", page="/accounts/").status_code == 303
    assert set(ids(env)) == {"Two", "Three"}
    assert primary(env) == ["Three"]  # Two is inactive
    assert "account_deleted" in env.actions("alice")


def test_primary_when_only_account_deactivated_then_activated_becomes_primary_again(
    env: WebEnv, alice: FlaskClient
) -> None:
    create(alice, "Solo")
    solo = ids(env)["Solo"]
    post_form(alice, f"/accounts/{solo}/deactivate", page="/accounts/")
    assert primary(env) == []
    post_form(alice, f"/accounts/{solo}/activate", page="/accounts/")
    assert primary(env) == ["Solo"]


def test_database_when_two_primaries_forced_refuses(env: WebEnv, alice: FlaskClient) -> None:
    create(alice, "One")
    create(alice, "Two")
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), env.database.session() as s:
        s.execute(text("UPDATE trading_accounts SET is_primary = :t"), {"t": True})


def test_delete_when_account_has_open_executions_refuses_and_lists_them(
    env: WebEnv, alice: FlaskClient
) -> None:
    create(alice, "Busy")
    busy = ids(env)["Busy"]
    _insert_execution(env, busy, "active")
    page = alice.get(f"/accounts/{busy}/delete").get_data(as_text=True)
    assert "cannot be deleted" in page and "active" in page
    response = post_form(alice, f"/accounts/{busy}/delete", page="/accounts/", follow_redirects=True)
    assert "live or unresolved" in response.get_data(as_text=True)
    assert ids(env) == {"Busy": busy}


def test_delete_when_execution_in_error_and_intent_unknown_refuses_and_keeps_every_row(
    env: WebEnv, alice: FlaskClient
) -> None:
    from algomirror.db.models import OrderIntent, StrategyExecution, StrategyRun

    create(alice, "Broken")
    broken = ids(env)["Broken"]
    execution_id = _insert_execution(env, broken, "error", intent_state="unknown")

    page = alice.get(f"/accounts/{broken}/delete").get_data(as_text=True)
    response = post_form(alice, f"/accounts/{broken}/delete", page="/accounts/", follow_redirects=True)

    text_out = response.get_data(as_text=True)
    assert "error" in page and "unknown" in page
    assert "live or unresolved" in text_out and f"execution #{execution_id} (error)" in text_out
    assert ids(env) == {"Broken": broken}
    with env.database.session() as s:
        assert s.query(StrategyExecution).count() == 1
        assert s.query(OrderIntent).count() == 1
        assert s.query(StrategyRun).count() == 1
    assert "account_deleted" not in env.actions("alice")


def test_delete_when_account_traded_archives_it_and_keeps_its_history(
    env: WebEnv, alice: FlaskClient
) -> None:
    from algomirror.db.models import OrderIntent, StrategyExecution, TradingAccount

    create(alice, "Old")
    create(alice, "Other")
    old = ids(env)["Old"]
    _insert_execution(env, old, "exited", intent_state="complete")

    confirm = alice.get(f"/accounts/{old}/delete").get_data(as_text=True)
    assert "archived" in confirm
    response = post_form(alice, f"/accounts/{old}/delete", page="/accounts/", follow_redirects=True)

    assert "archived" in response.get_data(as_text=True)
    assert set(ids(env)) == {"Other"}
    assert alice.get(f"/accounts/{old}/edit").status_code == 404
    with env.database.session() as s:
        row = s.get(TradingAccount, old)
        assert row is not None and row.archived_at is not None and not row.is_active and not row.is_primary
        assert s.query(StrategyExecution).count() == 1 and s.query(OrderIntent).count() == 1
    assert primary(env) == ["Other"]
    assert "account_archived" in env.actions("alice")
    # The archived account's name is free again.
    create(alice, "Old")
    assert set(ids(env)) == {"Old", "Other"}


def _insert_execution(env: WebEnv, account_id: int, status: str, intent_state: str | None = None) -> int:
    from algomirror.db.models import OrderIntent, Strategy, StrategyExecution, StrategyLeg, StrategyRun

    user_id = env.user("alice").id
    with env.database.session() as s:
        strategy = Strategy(user_id=user_id, name=f"Straddle {account_id}")
        s.add(strategy)
        s.flush()
        leg = StrategyLeg(strategy_id=strategy.id, leg_number=1)
        run = StrategyRun(strategy_id=strategy.id, status="closed" if status == "exited" else "active")
        if status == "exited":
            run.ended_at = run.started_at = env.clock.now()
        s.add_all([leg, run])
        s.flush()
        execution = StrategyExecution(
            strategy_id=strategy.id, account_id=account_id, leg_id=leg.id, run_id=run.id, status=status
        )
        s.add(execution)
        s.flush()
        if intent_state is not None:
            intent = OrderIntent(
                key=f"exec:{execution.id}:entry:1",
                execution_id=execution.id,
                account_id=account_id,
                symbol="NIFTY08DEC2624000CE",
                exchange="NFO",
                product="MIS",
                side="SELL",
                quantity=65,
            )
            s.add(intent)
            s.flush()
            for state in {"unknown": ("sent", "unknown"), "complete": ("sent", "complete")}[intent_state]:
                intent.state = state
                s.flush()  # each step is its own write: the database checks every transition
        return execution.id


def test_delete_when_get_then_post_without_token_does_not_delete(env: WebEnv, alice: FlaskClient) -> None:
    create(alice, "Main")
    main = ids(env)["Main"]
    assert alice.post(f"/accounts/{main}/delete").status_code == 400
    assert ids(env) == {"Main": main}


def test_unknown_account_id_when_requested_gives_404(env: WebEnv, alice: FlaskClient) -> None:
    assert alice.get("/accounts/424242/edit").status_code == 404
    assert post_form(alice, "/accounts/424242/primary", page="/accounts/").status_code == 404


def test_accounts_when_signed_out_redirect_to_login(env: WebEnv) -> None:
    signed_in(env, "alice")
    response = env.client().get("/accounts/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_broker_routes_when_over_limit_give_429(db_url: str, tmp_path: Path) -> None:
    env = make_env(db_url, tmp_path, ratelimit_broker="2 per minute")
    client = signed_in(env, "alice")
    codes = [
        post_form(client, "/accounts/new/test", form("Main"), page="/accounts/new").status_code
        for _ in range(3)
    ]
    assert codes[-1] == 429 and 429 not in codes[:2]
    env.database.dispose()


def test_new_account_form_when_opened_offers_openalgo_defaults_and_broker_list(alice: FlaskClient) -> None:
    html = alice.get("/accounts/new").get_data(as_text=True)
    assert 'value="http://127.0.0.1:5000"' in html and 'value="ws://127.0.0.1:8765"' in html
    # The key field is a password input that never carries a value.
    [key_input] = re.findall(r'<input[^>]*name="api_key"[^>]*>', html)
    assert 'type="password"' in key_input and not re.search(r'value="[^"]', key_input)
    for broker in ("zerodha", "angel", "dhan", "fyers", "upstox"):
        assert f'<option value="{broker}"' in html, broker


def test_stored_key_when_fernet_key_replaced_gives_clear_message_not_500(
    env: WebEnv, alice: FlaskClient
) -> None:
    from cryptography.fernet import Fernet

    from algomirror.security import SecretBox

    create(alice, "Main")
    account = env.accounts("alice")[0]
    env.state.box = SecretBox(Fernet.generate_key())  # as if instance/fernet.key had been replaced
    saved = post_form(alice, f"/accounts/{account.id}/test", page="/accounts/", follow_redirects=True)
    assert saved.status_code == 200 and "cannot be decrypted" in saved.get_data(as_text=True)
    data = form("Main", api_key="", host_url=account.host_url)
    tested = post_form(alice, f"/accounts/{account.id}/edit/test", data, page="/accounts/")
    assert tested.status_code == 400 and "cannot be decrypted" in tested.get_data(as_text=True)
    moved = post_form(
        alice,
        f"/accounts/{account.id}/edit",
        {**data, "host_url": "http://127.0.0.1:5001"},
        page="/accounts/",
    )
    # A new host needs the key typed again (the stored key only ever goes to the saved host).
    assert moved.status_code == 400 and "Enter the API key again" in moved.get_data(as_text=True)
    after = env.accounts("alice")[0]
    assert after.host_url == account.host_url
    assert after.api_key_encrypted == account.api_key_encrypted  # the old token is kept, not overwritten
    # Entering the key again works with the new encryption key.
    fresh = post_form(
        alice,
        f"/accounts/{account.id}/edit",
        {**data, "host_url": "http://127.0.0.1:5001", "api_key": KEY},
        page="/accounts/",
    )
    assert fresh.status_code == 303
    after = env.accounts("alice")[0]
    assert after.host_url == "http://127.0.0.1:5001"
    assert env.state.box.decrypt(after.api_key_encrypted or "") == KEY


def _log(env: WebEnv, username: str, account_id: int | None, action: str, details: str) -> None:
    from algomirror.db.models import ActivityLog

    with env.database.session() as s:
        s.add(
            ActivityLog(
                user_id=env.user(username).id,
                account_id=account_id,
                action=action,
                details=details,
                timestamp=env.clock.now(),
            )
        )


def test_activity_filter_when_unlisted_actions_logged_offers_exactly_what_exists(
    env: WebEnv, alice: FlaskClient
) -> None:
    create(alice, "Main")
    account_id = ids(env)["Main"]
    _log(env, "alice", account_id, "order_cancel_requested", "order 7: cancel asked")
    _log(env, "alice", account_id, "order_cancelled", "order 7: cancelled (broker confirmed)")
    _log(env, "alice", None, "demo_seeded", "demo data")
    bob = signed_in(env, "bob")
    _log(env, "bob", None, "bob_only_action", "bob's own")
    offered = set(re.findall(r'<option value="([a-z_]+)"', alice.get("/activity/").get_data(as_text=True)))
    # alice, the first user, is the administrator: the list covers everyone's rows
    assert {"order_cancel_requested", "order_cancelled", "demo_seeded", "bob_only_action"} <= offered
    assert "user_made_admin" not in offered  # nobody has logged it
    bob_offered = set(re.findall(r'<option value="([a-z_]+)"', bob.get("/activity/").get_data(as_text=True)))
    assert "bob_only_action" in bob_offered
    assert not bob_offered & {"order_cancelled", "demo_seeded", "account_created"}  # alice's, not bob's
    filtered = alice.get("/activity/?action=order_cancelled").get_data(as_text=True)
    assert "cancelled (broker confirmed)" in filtered and "cancel asked" not in filtered


def test_connection_history_when_order_cancelled_shows_connection_events_only(
    env: WebEnv, alice: FlaskClient
) -> None:
    create(alice, "Main")
    account_id = ids(env)["Main"]
    _log(env, "alice", account_id, "order_cancel_requested", "order 7: cancel asked")
    _log(env, "alice", account_id, "order_cancelled", "order 7: cancelled (broker confirmed)")
    _log(env, "alice", account_id, "connection_lost", "socket dropped at the broker")
    page = alice.get(f"/accounts/{account_id}/overview").get_data(as_text=True)
    assert "socket dropped at the broker" in page
    assert "cancel asked" not in page and "broker confirmed" not in page


def test_form_error_when_key_typed_keeps_it_for_that_reply_only(env: WebEnv, alice: FlaskClient) -> None:
    bad = create(alice, "ab")  # name too short: the form comes back with its error
    assert bad.status_code == 400 and f'value="{KEY}"' in bad.get_data(as_text=True)
    create(alice, "Main")
    account_id = ids(env)["Main"]
    edit_page = f"/accounts/{account_id}/edit"
    assert KEY not in alice.get(edit_page).get_data(as_text=True)  # the stored key is never rendered
    new_key = "beta-key-0002-ABCD"
    # A new host with a new key but a bad name: the typed key comes back, ready for Save.
    typed = post_form(alice, edit_page, form("x", api_key=new_key), page=edit_page)
    assert typed.status_code == 400 and f'value="{new_key}"' in typed.get_data(as_text=True)
    # An error with the key field left empty never fills it with the stored key.
    empty = post_form(alice, edit_page, form("x", api_key=""), page=edit_page)
    assert empty.status_code == 400 and KEY not in empty.get_data(as_text=True)
    assert new_key not in alice.get(edit_page).get_data(as_text=True)


def test_create_when_connection_test_fails_asks_to_confirm_and_saves_only_on_save_anyway(
    env: WebEnv, alice: FlaskClient
) -> None:
    with fake_openalgo("another-key-entirely") as host:
        first = create(alice, "Main", host_url=host, save_anyway="")
        body = first.get_data(as_text=True)
        assert first.status_code == 200 and 'name="save_anyway"' in body and "Nothing was saved" in body
        assert f'value="{KEY}"' in body  # ready for the second submit without a paste
        assert env.accounts("alice") == []
        second = create(alice, "Main", host_url=host, save_anyway="y")
    assert second.status_code == 303
    assert [a.connection_status for a in env.accounts("alice")] == ["auth_failed"]


def test_edit_when_new_key_rejected_asks_to_confirm_and_keeps_old_key_until_save_anyway(
    env: WebEnv, alice: FlaskClient
) -> None:
    with fake_openalgo(KEY) as host:
        create(alice, "Main", host_url=host)
        account_id = ids(env)["Main"]
        page = f"/accounts/{account_id}/edit"
        wrong = "wrong-key-0003-QRST"
        first = post_form(
            alice, page, form("Renamed", host_url=host, api_key=wrong, save_anyway=""), page=page
        )
        assert first.status_code == 200 and 'name="save_anyway"' in first.get_data(as_text=True)
        account = env.accounts("alice")[0]
        assert (account.account_name, account.api_key_last4, account.connection_status) == (
            "Main",
            KEY[-4:],
            "connected",
        )
        second = post_form(alice, page, form("Renamed", host_url=host, api_key=wrong), page=page)
    assert second.status_code == 303
    account = env.accounts("alice")[0]
    assert (account.account_name, account.api_key_last4, account.connection_status) == (
        "Renamed",
        wrong[-4:],
        "auth_failed",
    )


def test_primary_when_account_key_rejected_needs_confirmation_saying_no_live_prices(
    env: WebEnv, alice: FlaskClient
) -> None:
    with fake_openalgo(KEY) as host:
        create(alice, "Good", host_url=host)
    with fake_openalgo("another-key-entirely") as host:
        create(alice, "Rejected", host_url=host)
    target = ids(env)["Rejected"]
    asked = post_form(alice, f"/accounts/{target}/primary", page="/accounts/")
    body = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "no live prices" in body and "feeds market data" in body
    assert primary(env) == ["Good"]
    done = post_form(alice, f"/accounts/{target}/primary", {"confirm_unhealthy": "yes"}, page="/accounts/")
    assert done.status_code == 303 and primary(env) == ["Rejected"]


def test_primary_when_deactivated_promotes_healthy_account_before_older_rejected_one(
    env: WebEnv, alice: FlaskClient
) -> None:
    with fake_openalgo(KEY) as host:
        create(alice, "First", host_url=host)
    with fake_openalgo("another-key-entirely") as host:
        create(alice, "Rejected", host_url=host)
    with fake_openalgo(KEY) as host:
        create(alice, "Healthy", host_url=host)
    post_form(alice, f"/accounts/{ids(env)['First']}/deactivate", page="/accounts/")
    assert primary(env) == ["Healthy"]  # "Rejected" is older but would feed no prices
    post_form(alice, f"/accounts/{ids(env)['Healthy']}/deactivate", page="/accounts/")
    assert primary(env) == ["Rejected"]  # the only active one left: still better than none
