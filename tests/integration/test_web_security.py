"""CSRF, headers, error pages, rate limits, XSS, API-key secrecy and owner scoping (IDOR)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.integration.web_support import (
    WebEnv,
    csrf_token,
    fake_openalgo,
    login,
    make_env,
    post_form,
    signed_in,
    unused_port,
)

SECRET_KEY = "ZZTOPSECRET-4242-key-Qx9w"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


def add_account(client: FlaskClient, name: str, *, key: str = SECRET_KEY, host: str | None = None) -> int:
    response = post_form(
        client,
        "/accounts/new",
        {
            "account_name": name,
            "broker": "zerodha",
            "host_url": host or f"http://127.0.0.1:{unused_port()}",
            "websocket_url": "ws://127.0.0.1:8765",
            "api_key": key,
            "save_anyway": "y",  # no server there by default: the failed test is confirmed up front
        },
        page="/accounts/new",
    )
    assert response.status_code == 303, response.get_data(as_text=True)[:3000]
    return 0


def _account_id(env: WebEnv, username: str, name: str) -> int:
    return next(a.id for a in env.accounts(username) if a.account_name == name)


# --- CSRF --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data"),
    [
        (
            "/accounts/new",
            {
                "account_name": "NoToken",
                "broker": "zerodha",
                "host_url": "http://127.0.0.1:5000",
                "websocket_url": "ws://127.0.0.1:8765",
                "api_key": "abcdefghijkl",
            },
        ),
        ("/logout", {}),
        ("/settings/password", {"current_password": "x", "new_password": "y", "new_password2": "y"}),
    ],
)
def test_post_when_csrf_token_missing_is_rejected_with_clear_page_and_changes_nothing(
    env: WebEnv, path: str, data: dict[str, str]
) -> None:
    client = signed_in(env, "alice")
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert env.accounts("alice") == []
    assert client.get("/accounts/").status_code == 200  # still signed in


def test_post_when_csrf_token_is_forged_or_from_another_session_is_rejected(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    bob = signed_in(env, "bob")
    bobs_token = csrf_token(bob, "/accounts/")
    data = {
        "account_name": "Forged",
        "broker": "zerodha",
        "host_url": "http://127.0.0.1:5000",
        "websocket_url": "ws://127.0.0.1:8765",
        "api_key": "abcdefghijkl",
    }
    assert alice.post("/accounts/new", data={**data, "csrf_token": "forged"}).status_code == 400
    assert alice.post("/accounts/new", data={**data, "csrf_token": bobs_token}).status_code == 400
    assert env.accounts("alice") == []


def test_htmx_post_when_token_sent_in_header_is_accepted(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    token = csrf_token(client, "/accounts/")
    response = client.post("/logout", headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert response.status_code == 303


def test_htmx_post_when_token_missing_gets_json_error(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    response = client.post("/logout", headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert response.is_json and response.get_json()["status"] == 400


# --- headers and error pages ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/register", "/static/css/app.css", "/missing"])
def test_response_when_any_page_carries_security_headers(env: WebEnv, path: str) -> None:
    response = env.client().get(path)
    csp = response.headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'self'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "camera=()" in response.headers["Permissions-Policy"]


def test_pages_when_rendered_contain_no_inline_script_or_style(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    add_account(client, "Main account")
    for path in ("/", "/accounts/", "/accounts/new", "/settings/", "/activity/", "/admin/", "/login"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>" not in html and "style=" not in html and "<style" not in html, path
        assert "onclick" not in html, path


def test_error_pages_when_not_found_render_html_or_json(env: WebEnv) -> None:
    client = env.client()
    response = client.get("/no-such-page")
    assert response.status_code == 404 and "Not found" in response.get_data(as_text=True)
    response = client.get("/no-such-page", headers={"Accept": "application/json"})
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    response = client.get("/api/v1/nothing")
    assert response.is_json


def test_admin_pages_when_user_is_not_admin_give_403(env: WebEnv) -> None:
    signed_in(env, "alice")  # first user: admin
    bob = signed_in(env, "bob")
    assert bob.get("/admin/").status_code == 403
    assert "Forbidden" in bob.get("/admin/").get_data(as_text=True)
    bob_id = env.user("bob").id
    assert post_form(bob, f"/admin/users/{bob_id}/make-admin", page="/accounts/").status_code == 403
    assert not env.user("bob").is_admin


def test_auth_routes_when_too_many_requests_from_one_ip_give_429(db_url: str, tmp_path: Path) -> None:
    env = make_env(db_url, tmp_path, ratelimit_auth="3 per minute")
    client = env.client()
    codes = [client.get("/login").status_code for _ in range(5)]
    assert codes[:3] != [429, 429, 429] and codes[-1] == 429
    response = client.get("/login")
    assert response.status_code == 429 and "Too many requests" in response.get_data(as_text=True)
    assert "Retry-After" in response.headers
    env.database.dispose()


def test_server_error_when_view_crashes_shows_500_page_without_details(env: WebEnv) -> None:
    @env.app.route("/boom")
    def boom() -> str:
        raise RuntimeError("internal detail that must not leak")

    response = env.client().get("/boom")
    assert response.status_code == 500
    assert "internal detail" not in response.get_data(as_text=True)


# --- XSS and secrets -------------------------------------------------------------------------------


def test_account_name_when_it_contains_markup_is_escaped(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    add_account(client, "<script>alert(1)</script>")
    account_id = env.accounts("alice")[0].id
    for path in (
        "/",
        "/accounts/",
        f"/accounts/{account_id}",
        f"/accounts/{account_id}/edit",
        f"/accounts/{account_id}/delete",
        "/activity/",
    ):
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/accounts/").get_data(as_text=True)


def test_api_key_when_account_exists_never_appears_in_any_page_or_log(
    env: WebEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = signed_in(env, "alice")
    with fake_openalgo(SECRET_KEY) as host:
        add_account(client, "Main account", host=host)
        account_id = env.accounts("alice")[0].id
        pages = [
            "/",
            "/accounts/",
            f"/accounts/{account_id}",
            f"/accounts/{account_id}/edit",
            f"/accounts/{account_id}/delete",
            "/activity/",
            "/activity/?user=all",
            "/settings/",
            "/admin/",
        ]
        bodies = [client.get(p).get_data(as_text=True) for p in pages]
        # Test on the form (unsaved), on the saved account, and an edit that re-tests a new key.
        data = {
            "account_name": "Main account",
            "broker": "zerodha",
            "host_url": host,
            "websocket_url": "ws://127.0.0.1:8765",
            "api_key": SECRET_KEY,
        }
        typed = post_form(client, "/accounts/new/test", data, page="/accounts/new").get_data(as_text=True)
        # The reply to that very submission keeps the key just typed in its own field, and nowhere else.
        assert typed.count(SECRET_KEY) == 1 and f'value="{SECRET_KEY}"' in typed
        bodies.append(typed.replace(f'value="{SECRET_KEY}"', 'value=""'))
        bodies.append(
            post_form(
                client, f"/accounts/{account_id}/edit/test", {**data, "api_key": ""}, page="/accounts/"
            ).get_data(as_text=True)
        )
        bodies.append(
            post_form(
                client, f"/accounts/{account_id}/test", page="/accounts/", follow_redirects=True
            ).get_data(as_text=True)
        )
        bodies.append(
            post_form(
                client,
                f"/accounts/{account_id}/edit",
                {**data, "account_name": "Renamed"},
                page="/accounts/",
                follow_redirects=True,
            ).get_data(as_text=True)
        )
    for body in bodies:
        assert SECRET_KEY not in body
        assert SECRET_KEY[:12] not in body
    assert "••••" + SECRET_KEY[-4:] in client.get("/accounts/").get_data(as_text=True)
    account = env.accounts("alice")[0]
    assert account.connection_status == "connected"
    assert account.api_key_encrypted and SECRET_KEY not in account.api_key_encrypted
    assert env.state.box.decrypt(account.api_key_encrypted) == SECRET_KEY
    assert caplog.records, "expected some log output to inspect"
    for record in caplog.records:
        assert SECRET_KEY not in record.getMessage()
    assert SECRET_KEY not in caplog.text
    with env.database.session_factory() as s:
        from sqlalchemy import select

        from algomirror.db.models import ActivityLog

        for details in s.scalars(select(ActivityLog.details)):
            assert SECRET_KEY not in (details or "")


def test_logging_when_code_logs_a_key_by_mistake_the_handler_redacts_it(env: WebEnv) -> None:
    import io

    from algomirror.security import install_redaction

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("algomirror.test_redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_redaction(logger=logger)
        env.state.box.encrypt("KEY-that-was-handled-123")
        logger.warning("oops %s", "KEY-that-was-handled-123")
        logger.warning("settings secret %s", env.app.config["SECRET_KEY"])
    finally:
        logger.removeHandler(handler)
    assert "KEY-that-was-handled" not in stream.getvalue()
    assert env.app.config["SECRET_KEY"] not in stream.getvalue()
    assert stream.getvalue().count("[REDACTED]") == 2


# --- owner scoping ----------------------------------------------------------------------------------


def test_other_users_account_when_addressed_by_id_gives_404_and_stays_unchanged(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    add_account(alice, "Alice main")
    add_account(alice, "Alice backup")
    target = _account_id(env, "alice", "Alice backup")
    before = {
        a.id: (a.account_name, a.is_primary, a.is_active, a.connection_status) for a in env.accounts("alice")
    }
    bob = signed_in(env, "bob")
    for path in (f"/accounts/{target}", f"/accounts/{target}/edit", f"/accounts/{target}/delete"):
        assert bob.get(path).status_code == 404, path
    edit = {
        "account_name": "Stolen",
        "broker": "zerodha",
        "host_url": "http://127.0.0.1:5000",
        "websocket_url": "ws://127.0.0.1:8765",
        "api_key": "",
    }
    posts = [
        (f"/accounts/{target}/edit", edit),
        (f"/accounts/{target}/edit/test", edit),
        (f"/accounts/{target}/delete", {}),
        (f"/accounts/{target}/primary", {}),
        (f"/accounts/{target}/test", {}),
        (f"/accounts/{target}/deactivate", {}),
        (f"/accounts/{target}/activate", {}),
    ]
    for path, data in posts:
        assert post_form(bob, path, data, page="/accounts/").status_code == 404, path
    assert {
        a.id: (a.account_name, a.is_primary, a.is_active, a.connection_status) for a in env.accounts("alice")
    } == before
    assert "Alice" not in bob.get("/accounts/").get_data(as_text=True)
    assert bob.get("/accounts/999999").status_code == 404


def test_activity_log_when_other_user_looks_shows_only_their_own_entries(env: WebEnv) -> None:
    signed_in(env, "admin")  # the first user is the administrator
    alice = signed_in(env, "alice")
    add_account(alice, "Alice private name")
    bob = signed_in(env, "bob")
    alice_id = env.user("alice").id
    for query in ("", f"?user={alice_id}", "?user=all", "?q=Alice"):
        html = bob.get(f"/activity/{query}").get_data(as_text=True)
        assert "Alice private name" not in html, query
    assert "Alice private name" in alice.get("/activity/").get_data(as_text=True)


def test_activity_log_when_admin_filters_by_user_sees_that_users_entries(env: WebEnv) -> None:
    admin = signed_in(env, "admin")
    alice = signed_in(env, "alice")
    add_account(alice, "Alice private name")
    alice_id = env.user("alice").id
    assert "Alice private name" not in admin.get("/activity/").get_data(as_text=True)
    assert "Alice private name" in admin.get(f"/activity/?user={alice_id}").get_data(as_text=True)
    assert "Alice private name" in admin.get("/activity/?user=all").get_data(as_text=True)
    login(env.client(), "alice", "wrong-password-123")
    html = admin.get(f"/activity/?user={alice_id}&action=login_failed").get_data(as_text=True)
    assert "login_failed" in html and "account_created</code>" not in html
