"""The market-data pages (web/market_data.py) on SQLite and PostgreSQL, the expiries coming from the
paper exchange over loopback: sign-in, the chain page and its validation (instrument, expiry, strikes)
with clear errors, a gateway that cannot list expiries, the viewing sessions (create, heartbeat with
its CSRF header, expiry, end; another user's session can be neither renewed nor ended), and the feed
status page showing only the user's own connections and failovers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from algomirror.broker.hosts import HostPolicy
from algomirror.db.models import FailoverEvent, TradingAccount, WebSocketConnection, WebSocketSession
from algomirror.host_settings import save_host_policy
from algomirror.web import market_data
from tests.factories import make_account
from tests.integration.web_support import START, TOKEN_RE, WebEnv, add_user, make_env, signed_in, unused_port
from tests.sim_fixtures import SimHandle

FIRST_EXPIRY = date(2026, 12, 1)  # the paper exchange's nearest NIFTY weekly at its start (25 Nov 2026)


@dataclass
class Setup:
    env: WebEnv
    alice: FlaskClient
    bob: FlaskClient
    alice_id: int
    bob_id: int
    account_id: int


@pytest.fixture
def setup(db_url: str, tmp_path: Path, simulator_session: SimHandle) -> Setup:
    market_data._expiry_cache.clear()
    env = make_env(db_url, tmp_path)
    alice = signed_in(env, "alice")
    bob = signed_in(env, "bob")
    alice_id, bob_id = env.user("alice").id, env.user("bob").id
    box = env.state.box
    with env.database.session() as s:
        account_id = make_account(
            s,
            alice_id,
            "Alice primary",
            is_primary=True,
            host_url=simulator_session.rest_url,
            api_key_encrypted=box.encrypt(simulator_session.api_keys[0]),
        ).id
        make_account(
            s,
            bob_id,
            "Bob primary",
            is_primary=True,
            host_url=simulator_session.rest_url,
            api_key_encrypted=box.encrypt(simulator_session.api_keys[1]),
        )
    yield Setup(env, alice, bob, alice_id, bob_id, account_id)
    env.database.dispose()


def token(client: FlaskClient) -> str:
    match = TOKEN_RE.search(client.get("/market/feeds").get_data(as_text=True))
    assert match is not None
    return match.group(1)


def open_session(client: FlaskClient, **body: Any) -> Any:
    payload = {"instrument": "NIFTY", "expiry": FIRST_EXPIRY.isoformat(), "strikes": 20, **body}
    return client.post("/market/chain/sessions", json=payload, headers={"X-CSRFToken": token(client)})


def session_row(env: WebEnv, session_id: str) -> WebSocketSession | None:
    with env.database.session_factory() as s:
        return s.scalars(select(WebSocketSession).where(WebSocketSession.session_id == session_id)).first()


# ------------------------------------------------------------------------------------------ sign-in


def test_signed_out_pages_redirect_and_session_calls_get_401(db_url: str, tmp_path: Path) -> None:
    env = make_env(db_url, tmp_path)
    add_user(env, "alice")
    client = env.client()
    for path in ("/market/chain", "/market/feeds", "/market/"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    # A page left open after sign-out still holds a valid CSRF token (the sign-in page's here).
    match = TOKEN_RE.search(client.get("/login").get_data(as_text=True))
    assert match is not None
    for path in ("/market/chain/sessions", "/market/chain/sessions/abcdefghijklmnopqrstuvwx/heartbeat"):
        response = client.post(path, json={}, headers={"X-CSRFToken": match.group(1)})
        assert response.status_code == 401, path
        assert "sign in" in response.get_json()["message"].lower()
    env.database.dispose()


# ------------------------------------------------------------------------------------------ chain page


def test_chain_page_defaults_to_nifty_first_listed_expiry_and_20_strikes(setup: Setup) -> None:
    response = setup.alice.get("/market/chain")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f'data-topic="chain:{setup.alice_id}:NIFTY:{FIRST_EXPIRY.isoformat()}"' in html
    assert 'data-strikes="20"' in html and 'data-step="50"' in html
    assert f'<option value="{FIRST_EXPIRY.isoformat()}" selected>' in html
    assert "41 rows" in html and "Alice primary" in html
    for name in ("NIFTY", "BANKNIFTY", "SENSEX"):
        assert f'<option value="{name}"' in html
    assert "option_chain.js" in html and "live.js" in html


def test_chain_page_for_sensex_with_a_listed_expiry(setup: Setup) -> None:
    page = setup.alice.get("/market/chain?instrument=sensex&strikes=5")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    listed = re.findall(r'<option value="(\d{4}-\d{2}-\d{2})"', html)
    assert listed, html[:3000]
    chosen = listed[-1]
    response = setup.alice.get(f"/market/chain?instrument=SENSEX&expiry={chosen}&strikes=5")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f'data-topic="chain:{setup.alice_id}:SENSEX:{chosen}"' in html
    assert 'data-step="100"' in html and "11 rows" in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("instrument=FINNIFTY", "Unknown instrument: choose one of NIFTY, BANKNIFTY, SENSEX."),
        ("instrument=%3Cscript%3E", "Unknown instrument"),
        ("strikes=0", "whole number from 1 to 50"),
        ("strikes=51", "whole number from 1 to 50"),
        ("strikes=abc", "whole number from 1 to 50"),
        ("strikes=-3", "whole number from 1 to 50"),
        ("expiry=01DEC26", "YYYY-MM-DD"),
        ("expiry=2026-13-01", "not a real date"),
        ("expiry=2026-12-02", "2026-12-02 is not a listed NIFTY expiry"),
    ],
)
def test_bad_parameters_are_400_with_the_reason(setup: Setup, query: str, message: str) -> None:
    response = setup.alice.get(f"/market/chain?{query}")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'id="chain-error"' in html and message in html
    assert "data-topic" not in html  # no live chain for a refused request
    assert "<script>" not in html


def test_a_gateway_that_cannot_list_expiries_is_shown_on_the_page(setup: Setup) -> None:
    with setup.env.database.session() as s:
        account = s.get(TradingAccount, setup.account_id)
        assert account is not None
        account.host_url = f"http://127.0.0.1:{unused_port()}"
    response = setup.alice.get("/market/chain")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "could not list the NIFTY expiries" in html and "Alice primary" in html
    assert "data-topic" not in html


def test_an_unreadable_key_or_a_host_off_the_allowed_list_is_said_and_nothing_is_called(setup: Setup) -> None:
    with setup.env.database.session() as s:
        account = s.get(TradingAccount, setup.account_id)
        assert account is not None
        good_token = account.api_key_encrypted
        account.api_key_encrypted = "not-a-fernet-token"
    html = setup.alice.get("/market/chain").get_data(as_text=True)
    assert "Alice primary" in html and "stored API key cannot be read; enter it again on Accounts" in html
    assert "data-topic" not in html
    with setup.env.database.session() as s:
        account = s.get(TradingAccount, setup.account_id)
        assert account is not None
        account.api_key_encrypted = good_token
        save_host_policy(s, HostPolicy.parse("openalgo.example.com", allow_loopback=False))
    html = setup.alice.get("/market/chain").get_data(as_text=True)
    assert "host is not on the administrator&#39;s allowed list" in html
    assert "data-topic" not in html


def test_without_an_account_the_page_says_what_to_do(db_url: str, tmp_path: Path) -> None:
    env = make_env(db_url, tmp_path)
    client = signed_in(env, "carol")
    response = client.get("/market/chain")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="chain-no-account"' in html and "data-topic" not in html
    env.database.dispose()


# ------------------------------------------------------------------------------------------ sessions


def test_a_session_is_created_renewed_by_heartbeat_and_ended(setup: Setup) -> None:
    env, clock = setup.env, setup.env.clock
    response = open_session(setup.alice, strikes=7)
    assert response.status_code == 201, response.get_data(as_text=True)
    data = response.get_json()
    assert data["topic"] == f"chain:{setup.alice_id}:NIFTY:{FIRST_EXPIRY.isoformat()}"
    assert data["heartbeat_seconds"] == 30
    row = session_row(env, data["session_id"])
    assert row is not None and row.user_id == setup.alice_id and row.account_id == setup.account_id
    assert (row.session_type, row.instrument, row.expiry, row.strike_count) == (
        "option_chain",
        "NIFTY",
        "2026-12-01",
        7,
    )
    assert row.expires_at == START + timedelta(minutes=5) and row.is_active

    clock.advance(timedelta(minutes=4))
    beat = setup.alice.post(data["heartbeat_url"], headers={"X-CSRFToken": token(setup.alice)})
    assert beat.status_code == 200
    renewed = session_row(env, data["session_id"])
    assert renewed is not None and renewed.expires_at == START + timedelta(minutes=9)
    assert renewed.last_heartbeat == START + timedelta(minutes=4)

    # The pagehide beacon: a form POST carrying the token as a field (sendBeacon sets no headers).
    ended = setup.alice.post(data["end_url"], data={"csrf_token": token(setup.alice)})
    assert ended.status_code == 204
    assert session_row(env, data["session_id"]) is None
    again = setup.alice.post(data["heartbeat_url"], headers={"X-CSRFToken": token(setup.alice)})
    assert again.status_code == 404


def test_heartbeat_and_create_need_the_csrf_header(setup: Setup) -> None:
    refused = setup.alice.post(
        "/market/chain/sessions", json={"instrument": "NIFTY", "expiry": FIRST_EXPIRY.isoformat()}
    )
    assert refused.status_code == 400
    data = open_session(setup.alice).get_json()
    setup.env.clock.advance(timedelta(minutes=1))
    assert setup.alice.post(data["heartbeat_url"]).status_code == 400
    row = session_row(setup.env, data["session_id"])
    assert row is not None and row.expires_at == START + timedelta(minutes=5)  # not renewed
    wrong = setup.alice.post(data["heartbeat_url"], headers={"X-CSRFToken": "forged"})
    assert wrong.status_code == 400


def test_another_users_session_cannot_be_renewed_or_ended(setup: Setup) -> None:
    data = open_session(setup.alice).get_json()
    setup.env.clock.advance(timedelta(minutes=2))
    bob_token = token(setup.bob)
    beat = setup.bob.post(data["heartbeat_url"], headers={"X-CSRFToken": bob_token})
    assert beat.status_code == 404
    end = setup.bob.post(data["end_url"], data={"csrf_token": bob_token})
    assert end.status_code == 404
    row = session_row(setup.env, data["session_id"])
    assert row is not None and row.expires_at == START + timedelta(minutes=5)


def test_an_expired_session_is_gone_and_a_bad_id_is_404(setup: Setup) -> None:
    data = open_session(setup.alice).get_json()
    setup.env.clock.advance(timedelta(minutes=5, seconds=1))
    beat = setup.alice.post(data["heartbeat_url"], headers={"X-CSRFToken": token(setup.alice)})
    assert beat.status_code == 410
    assert "expired" in beat.get_json()["message"]
    bad = setup.alice.post(
        "/market/chain/sessions/short/heartbeat", headers={"X-CSRFToken": token(setup.alice)}
    )
    assert bad.status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instrument": "MIDCPNIFTY"}, "Unknown instrument"),
        ({"strikes": 500}, "whole number from 1 to 50"),
        ({"expiry": ""}, "Expiry is required"),
        ({"expiry": "2030-01-01"}, "not a listed NIFTY expiry"),
    ],
)
def test_session_validation_is_400_json(setup: Setup, body: dict[str, Any], message: str) -> None:
    response = open_session(setup.alice, **body)
    assert response.status_code == 400
    assert message in response.get_json()["message"]
    with setup.env.database.session_factory() as s:
        assert s.scalars(select(WebSocketSession)).first() is None


def test_live_sessions_per_user_are_capped(setup: Setup) -> None:
    for _ in range(market_data.MAX_SESSIONS_PER_USER):
        assert open_session(setup.alice, strikes=1).status_code == 201
    assert open_session(setup.alice, strikes=1).status_code == 429
    assert open_session(setup.bob, strikes=1).status_code == 201  # per user
    setup.env.clock.advance(timedelta(minutes=6))  # expired ones no longer count
    assert open_session(setup.alice, strikes=1).status_code == 201


# ------------------------------------------------------------------------------------------ feeds


def test_feed_page_shows_only_the_users_connections_and_failovers(setup: Setup) -> None:
    env = setup.env
    with env.database.session() as s:
        bob_account = s.scalars(select(TradingAccount.id).where(TradingAccount.user_id == setup.bob_id)).one()
        backup = make_account(s, setup.alice_id, "Alice backup").id
        s.add_all(
            [
                WebSocketConnection(
                    account_id=setup.account_id,
                    connection_id=f"feed:{setup.account_id}",
                    status="authenticated",
                    connected_at=START,
                    messages_received=1234,
                    last_heartbeat=START + timedelta(seconds=3),
                ),
                WebSocketConnection(
                    account_id=bob_account, connection_id=f"feed:{bob_account}", status="error"
                ),
                FailoverEvent(
                    from_account_id=setup.account_id,
                    to_account_id=backup,
                    reason="silent (3 failures)",
                    timestamp=START,
                    success=True,
                ),
                FailoverEvent(
                    from_account_id=backup,
                    to_account_id=None,
                    reason="connect failed",
                    timestamp=START + timedelta(minutes=1),
                    success=False,
                    error_message="no healthy backup account",
                ),
                FailoverEvent(
                    from_account_id=bob_account,
                    to_account_id=None,
                    reason="bob's secret reason",
                    timestamp=START,
                    success=False,
                ),
            ]
        )
    response = setup.alice.get("/market/feeds")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f"feed:{setup.account_id}" in html and "1,234" in html and "authenticated" in html
    assert f"feed:{bob_account}" not in html and "bob&#39;s secret reason" not in html
    assert "silent (3 failures)" in html and "no healthy backup account" in html
    assert html.index("connect failed") < html.index("silent (3 failures)")  # newest first
    assert f'data-user-id="{setup.alice_id}"' in html and "feed_status.js" in html
    assert "Alice backup" in html
    # Bob sees his own row and none of Alice's.
    bob_html = setup.bob.get("/market/feeds").get_data(as_text=True)
    assert f"feed:{bob_account}" in bob_html and f"feed:{setup.account_id}" not in bob_html
    assert "silent (3 failures)" not in bob_html


def test_failover_history_is_bounded(setup: Setup) -> None:
    with setup.env.database.session() as s:
        s.add_all(
            FailoverEvent(
                from_account_id=setup.account_id,
                reason=f"reason {i}",
                timestamp=START + timedelta(seconds=i),
                success=False,
            )
            for i in range(60)
        )
    html = setup.alice.get("/market/feeds").get_data(as_text=True)
    assert "reason 59" in html and "reason 10<" in html and "reason 9<" not in html
