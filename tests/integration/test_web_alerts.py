"""Engine alerts on the dashboard (list, header badge, Acknowledge) and per-account entry halts on the
account pages ("Entries halted" + Resume entries with confirmation): own rows only (another user's id is
a 404), CSRF on every POST, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from algomirror.db.models import EngineAlert, TradingAccount
from algomirror.engine.alerts import raise_alert
from algomirror.engine.halts import ACCOUNT_RESUMED_ACTION, halt_account_entries
from tests.factories import make_account
from tests.integration.web_support import START, WebEnv, make_env, post_form, signed_in


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


def _setup(env: WebEnv) -> tuple[FlaskClient, FlaskClient, int, int, int]:
    """alice (halted account with a critical alert) and bob (his own alert); returns both clients,
    alice's account id, her alert id and bob's alert id."""
    alice = signed_in(env, "alice")
    bob = signed_in(env, "bob")
    with env.database.session() as s:
        alice_id, bob_id = env.user("alice").id, env.user("bob").id
        account = make_account(s, alice_id, "Zerodha main")
        make_account(s, bob_id, "Bob's")
        title = (
            "Zerodha main: position missing at the broker: NIFTY01DEC2625800PE NFO NRML: ours -65, broker +0"
        )
        mine = raise_alert(
            s,
            user_id=alice_id,
            kind="reconciliation",
            severity="critical",
            title=title,
            details="It may have been closed outside AlgoMirror.",
            account_id=account.id,
            now=START,
        )
        theirs = raise_alert(s, user_id=bob_id, kind="reconciliation", title="Bob's gap", now=START)
        halt_account_entries(s, account.id, "reconciliation: NIFTY01DEC2625800PE gap", START)
        s.flush()
        return alice, bob, account.id, mine.id, theirs.id


def test_open_alerts_show_on_the_dashboard_with_a_header_badge(env: WebEnv) -> None:
    alice, _bob, account_id, alert_id, bob_alert = _setup(env)
    html = alice.get("/").get_data(as_text=True)
    assert f'id="alert-{alert_id}"' in html and 'data-severity="critical"' in html
    assert "ours -65, broker +0" in html and "closed outside AlgoMirror" in html
    assert f"/accounts/{account_id}" in html
    assert f'id="alert-{bob_alert}"' not in html and "Bob&#39;s gap" not in html
    assert 'id="alert-badge"' in html and "1 alert<" in html
    # The live fragment carries the list too (the dashboard is a live region).
    live = alice.get("/dashboard/live", headers={"X-AlgoMirror-Poll": "1"}).get_data(as_text=True)
    assert f'id="alert-{alert_id}"' in live
    assert "1 alert<" in alice.get("/header/live").get_data(as_text=True)


def test_acknowledge_hides_the_alert_needs_csrf_and_only_own_alerts(env: WebEnv) -> None:
    alice, _bob, _account_id, alert_id, bob_alert = _setup(env)
    # No CSRF token: refused, nothing acknowledged.
    assert alice.post(f"/alerts/{alert_id}/acknowledge").status_code == 400
    # Another user's alert acts as missing.
    assert post_form(alice, f"/alerts/{bob_alert}/acknowledge", page="/").status_code == 404
    assert post_form(alice, "/alerts/999999/acknowledge", page="/").status_code == 404
    response = post_form(alice, f"/alerts/{alert_id}/acknowledge", page="/")
    assert response.status_code == 303 and response.headers["Location"].endswith("/")
    with env.database.session_factory() as s:
        mine, theirs = s.get(EngineAlert, alert_id), s.get(EngineAlert, bob_alert)
        assert mine is not None and mine.acknowledged_at is not None
        assert mine.acknowledged_by == env.user("alice").id
        assert theirs is not None and theirs.acknowledged_at is None
    html = alice.get("/").get_data(as_text=True)
    assert f'id="alert-{alert_id}"' not in html and 'id="alert-badge"' not in html
    # Twice: no longer open.
    assert post_form(alice, f"/alerts/{alert_id}/acknowledge", page="/").status_code == 404
    # Signed out: to the login page, nothing done.
    assert env.client().post(f"/alerts/{bob_alert}/acknowledge").status_code in (302, 400)


def test_a_halted_account_shows_why_and_resumes_after_confirmation(env: WebEnv) -> None:
    alice, bob, account_id, _alert_id, _ = _setup(env)
    listing = alice.get("/accounts/").get_data(as_text=True)
    assert "Entries halted: reconciliation: NIFTY01DEC2625800PE gap" in listing
    detail = alice.get(f"/accounts/{account_id}").get_data(as_text=True)
    assert 'id="entries-halted"' in detail and f"/accounts/{account_id}/resume-entries" in detail

    confirm = alice.get(f"/accounts/{account_id}/resume-entries")
    assert confirm.status_code == 200
    page = confirm.get_data(as_text=True)
    assert "Resume new entries" in page and "ours -65, broker +0" in page  # the open alert is named
    # Another user's account is a 404 (GET and POST); a POST without CSRF is refused.
    assert bob.get(f"/accounts/{account_id}/resume-entries").status_code == 404
    assert post_form(bob, f"/accounts/{account_id}/resume-entries", page="/accounts/").status_code == 404
    assert alice.post(f"/accounts/{account_id}/resume-entries").status_code == 400
    with env.database.session_factory() as s:
        account = s.get(TradingAccount, account_id)
        assert account is not None and account.entries_halted_reason is not None

    done = post_form(alice, f"/accounts/{account_id}/resume-entries", page=f"/accounts/{account_id}")
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/accounts/{account_id}")
    with env.database.session_factory() as s:
        account = s.get(TradingAccount, account_id)
        assert account is not None and account.entries_halted_reason is None
    assert ACCOUNT_RESUMED_ACTION in env.actions("alice")
    assert 'id="entries-halted"' not in alice.get(f"/accounts/{account_id}").get_data(as_text=True)
    # Not halted any more: the page says so, a POST changes nothing and goes back.
    again = alice.get(f"/accounts/{account_id}/resume-entries")
    assert again.status_code == 200 and 'id="not-halted"' in again.get_data(as_text=True)
    page = f"/accounts/{account_id}"
    assert post_form(alice, f"/accounts/{account_id}/resume-entries", page=page).status_code == 303
    assert env.actions("alice").count(ACCOUNT_RESUMED_ACTION) == 1
