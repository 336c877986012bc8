"""Route-wide guarantees, checked by walking the app's URL map so a new route cannot slip through:
CSRF on every POST, owner scoping on every account route, security headers on every kind of response.
Also: the rate-limit store (memory or Redis), reverse-proxy client addresses, oversized bodies, the
activity trail, and the UI shell (navigation, vendored scripts, small-screen CSS, forms without JS)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, url_for
from flask.testing import FlaskClient
from flask_limiter import Limiter
from limits.storage import MemoryStorage, RedisStorage
from sqlalchemy import func, select
from werkzeug.routing import AnyConverter, IntegerConverter, Rule

from algomirror.db.models import ActivityLog, AppSetting, TradingAccount, User
from tests.integration.web_support import (
    WebEnv,
    csrf_token,
    login,
    make_env,
    post_form,
    signed_in,
    unused_port,
)

REDIS_URL = "redis://127.0.0.1:6379/15"
ACCOUNT_FORM = {
    "account_name": "Taken over",
    "broker": "zerodha",
    "host_url": "http://127.0.0.1:5000",
    "websocket_url": "ws://127.0.0.1:8765",
    "api_key": "",
}


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


def add_account(client: FlaskClient, name: str) -> None:
    data = {
        **ACCOUNT_FORM,
        "account_name": name,
        "host_url": f"http://127.0.0.1:{unused_port()}",
        "api_key": "hardening-key-0001",
        "save_anyway": "y",  # no server there: the failed test is confirmed up front
    }
    response = post_form(client, "/accounts/new", data, page="/accounts/new")
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]


def client_at(env: WebEnv, environ: dict[str, str]) -> FlaskClient:
    """A test client whose requests come from the given WSGI environ (REMOTE_ADDR, HTTP_USER_AGENT)."""
    client = env.client()
    client.environ_base.update(environ)
    return client


def snapshot(env: WebEnv) -> dict[str, Any]:
    """Everything a POST could change in the foundation's tables."""
    with env.database.session_factory() as s:
        return {
            "activity": s.scalar(select(func.count()).select_from(ActivityLog)),
            "settings": sorted((r.key, r.value) for r in s.scalars(select(AppSetting))),
            "users": sorted(
                (u.id, u.username, u.is_admin, u.is_active, u.password_hash, u.session_version)
                for u in s.scalars(select(User))
            ),
            "accounts": sorted(
                (a.id, a.user_id, a.account_name, a.is_primary, a.is_active, a.api_key_encrypted)
                for a in s.scalars(select(TradingAccount))
            ),
        }


def fill_url(rule: Rule, values: dict[str, Any]) -> str:
    """A concrete URL for ``rule``: int arguments from ``values`` by name (else 1), others 'x'."""
    args: dict[str, Any] = {}
    for name in rule.arguments:
        converter = rule._converters[name]  # werkzeug keeps a rule's converters here
        if isinstance(converter, IntegerConverter):
            args[name] = values.get(name, 1)
        elif isinstance(converter, AnyConverter):
            args[name] = sorted(converter.items)[0]
        else:
            args[name] = "x"
    assert rule.map is not None
    return rule.map.bind("localhost").build(rule.endpoint, args, method=sorted(rule.methods or {"GET"})[0])


def rules(app: Flask, method: str) -> list[Rule]:
    return sorted(
        (r for r in app.url_map.iter_rules() if method in (r.methods or set()) and r.endpoint != "static"),
        key=lambda r: r.rule,
    )


# --- CSRF on every POST route -----------------------------------------------------------------------


def test_every_post_route_when_csrf_token_missing_gives_400_and_changes_nothing(env: WebEnv) -> None:
    admin = signed_in(env, "admin")  # first user: administrator, so admin routes reach the CSRF check
    signed_in(env, "bob")
    add_account(admin, "Admin main")
    values = {
        "account_id": env.accounts("admin")[0].id,
        "user_id": env.user("bob").id,
        "order_pk": 1,
    }
    post_rules = rules(env.app, "POST")
    endpoints = {r.endpoint for r in post_rules}
    # The walk must cover the foundation's forms (guards against an empty or broken walk).
    assert {
        "auth.login",
        "auth.register",
        "auth.logout",
        "accounts.create",
        "accounts.test_new",
        "accounts.edit",
        "accounts.test_edit",
        "accounts.test_saved",
        "accounts.delete",
        "accounts.make_primary",
        "accounts.activate",
        "accounts.deactivate",
        "admin.toggle_signup",
        "admin.activate",
        "admin.deactivate",
        "admin.make_admin",
        "settings.change_password",
    } <= endpoints
    before = snapshot(env)
    failures = []
    for rule in post_rules:
        url = fill_url(rule, values)
        response = admin.post(url, data={**ACCOUNT_FORM, "new_password": "x" * 20, "password": "x" * 20})
        if response.status_code != 400 or "security token" not in response.get_data(as_text=True):
            failures.append(f"{rule.endpoint} {url}: {response.status_code}")
    assert failures == []
    assert snapshot(env) == before
    assert admin.get("/accounts/").status_code == 200  # the refusals did not sign the admin out


# --- owner scoping on every account route -----------------------------------------------------------


def test_every_account_route_when_other_users_id_given_gives_404_and_changes_nothing(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    add_account(alice, "Alice main")
    add_account(alice, "Alice spare")
    target = env.accounts("alice")[1].id
    bob = signed_in(env, "bob")
    add_account(bob, "Bob main")
    before = snapshot(env)
    account_rules = [r for r in env.app.url_map.iter_rules() if "account_id" in r.arguments]
    assert {r.endpoint for r in account_rules} >= {
        "accounts.detail",
        "accounts.edit",
        "accounts.test_edit",
        "accounts.test_saved",
        "accounts.delete",
        "accounts.make_primary",
        "accounts.activate",
        "accounts.deactivate",
    }
    failures = []
    for rule in sorted(account_rules, key=lambda r: r.rule):
        url = fill_url(rule, {"account_id": target})
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            if method == "GET":
                response = bob.get(url)
            else:
                data = {**ACCOUNT_FORM, "csrf_token": csrf_token(bob, "/accounts/")}
                response = bob.post(url, data=data)
            body = response.get_data(as_text=True)
            if response.status_code != 404 or "Alice" in body:
                failures.append(f"{method} {url} ({rule.endpoint}): {response.status_code}")
    assert failures == []
    assert snapshot(env) == before


ACCOUNT_ROUTES = [
    ("GET", "accounts.detail"),
    ("GET", "accounts.edit"),
    ("POST", "accounts.edit"),
    ("POST", "accounts.test_edit"),
    ("POST", "accounts.test_saved"),
    ("GET", "accounts.delete"),
    ("POST", "accounts.delete"),
    ("POST", "accounts.make_primary"),
    ("POST", "accounts.activate"),
    ("POST", "accounts.deactivate"),
    ("GET", "accounts.resume_entries"),
    ("POST", "accounts.resume_entries"),
]


def test_account_route_list_when_compared_with_the_app_covers_every_accounts_route(env: WebEnv) -> None:
    in_app = {
        (method, rule.endpoint)
        for rule in env.app.url_map.iter_rules()
        if rule.endpoint.startswith("accounts.") and "account_id" in rule.arguments
        for method in (rule.methods or set()) & {"GET", "POST"}
    }
    assert in_app == set(ACCOUNT_ROUTES)


@pytest.mark.parametrize(("method", "endpoint"), ACCOUNT_ROUTES)
def test_account_route_when_other_users_account_id_given_gives_404(
    env: WebEnv, method: str, endpoint: str
) -> None:
    alice = signed_in(env, "alice")
    add_account(alice, "Alice only")
    target = env.accounts("alice")[0].id
    bob = signed_in(env, "bob")
    before = snapshot(env)
    with env.app.test_request_context():
        url = url_for(endpoint, account_id=target)
    if method == "GET":
        response = bob.get(url)
    else:
        response = bob.post(url, data={**ACCOUNT_FORM, "csrf_token": csrf_token(bob, "/accounts/")})
    assert response.status_code == 404
    assert "Alice only" not in response.get_data(as_text=True)
    assert snapshot(env) == before
    # The owner reaches the same route (so the 404 above is scoping, not a broken route).
    if method == "GET":
        assert alice.get(url).status_code == 200


# --- security headers on every kind of response -----------------------------------------------------


def _assert_strict_headers(response: Any, what: str) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp, what
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, what
    assert response.headers.get("X-Content-Type-Options") == "nosniff", what
    assert response.headers.get("X-Frame-Options") == "DENY", what


def test_responses_when_error_static_or_redirect_all_carry_the_strict_csp(
    db_url: str, tmp_path: Path
) -> None:
    env = make_env(db_url, tmp_path, ratelimit_auth="4 per minute")
    try:

        @env.app.route("/boom-headers")
        def boom() -> str:
            raise RuntimeError("boom")

        client = signed_in(env, "alice")
        responses = {
            "static js": client.get("/static/vendor/htmx.min.js"),
            "static css": client.get("/static/css/app.css"),
            "redirect": env.client().get("/accounts/"),
            "404": client.get("/nothing-here"),
            "405": client.get("/logout"),
            "400 csrf": client.post("/logout"),
            "413": client.post("/accounts/new", data={"account_name": "x" * 400_000}),
            "500": client.get("/boom-headers"),
        }
        anonymous = env.client()
        codes = [anonymous.get("/login").status_code for _ in range(6)]
        assert codes[-1] == 429
        responses["429"] = anonymous.get("/login")
        for what, response in responses.items():
            _assert_strict_headers(response, what)
        assert responses["413"].status_code == 413 and responses["500"].status_code == 500
    finally:
        env.database.dispose()


def test_post_when_body_is_oversized_gives_413_page_and_saves_nothing(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    token = csrf_token(alice, "/accounts/new")
    before = snapshot(env)
    response = alice.post(
        "/accounts/new",
        data={**ACCOUNT_FORM, "account_name": "Big", "api_key": "k" * 300_000, "csrf_token": token},
    )
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True).lower()
    assert snapshot(env) == before


# --- rate-limit store -------------------------------------------------------------------------------


def _limiter(app: Flask) -> Limiter:
    limiters = app.extensions["limiter"]
    assert len(limiters) == 1
    limiter: Limiter = next(iter(limiters))
    return limiter


@pytest.mark.development_only
def test_limiter_when_no_redis_url_keeps_counts_in_memory(env: WebEnv) -> None:
    assert isinstance(_limiter(env.app).storage, MemoryStorage)


def test_limiter_when_redis_url_set_counts_in_redis_and_limits(db_url: str, tmp_path: Path) -> None:
    env = make_env(db_url, tmp_path, redis_url=REDIS_URL, ratelimit_auth="3 per minute")
    # A client address of its own, so parallel runs sharing this Redis never share a budget.
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    store = redis.Redis.from_url(REDIS_URL)
    try:
        storage = _limiter(env.app).storage
        assert isinstance(storage, RedisStorage)
        client = env.client()
        codes = [client.get("/login", environ_base={"REMOTE_ADDR": address}).status_code for _ in range(4)]
        assert codes[:3] != [429] * 3 and codes[-1] == 429
        keys = [k.decode() for k in store.scan_iter(match=f"*{address}*")]
        assert keys, "expected the limiter's counters in Redis"
        # Another address still has its whole budget: counts are per client.
        assert client.get("/login", environ_base={"REMOTE_ADDR": address + "9"}).status_code != 429
    finally:
        for key in store.scan_iter(match=f"*{address}*"):
            store.delete(key)
        store.close()
        env.database.dispose()


def test_limiter_when_redis_goes_away_keeps_serving_and_limiting_from_memory(
    db_url: str, tmp_path: Path
) -> None:
    env = make_env(
        db_url, tmp_path, redis_url=f"redis://127.0.0.1:{unused_port()}/0", ratelimit_auth="3 per minute"
    )
    try:
        client = env.client()
        codes = [client.get("/login").status_code for _ in range(5)]
        # No 500s: the pages work, and the limit still holds (counted in process memory).
        assert 500 not in codes and codes[0] in (200, 302), codes
        assert codes[-1] == 429
    finally:
        env.database.dispose()


# --- reverse proxy ----------------------------------------------------------------------------------


def _login_row(env: WebEnv) -> ActivityLog:
    with env.database.session_factory() as s:
        row = s.scalars(select(ActivityLog).where(ActivityLog.action == "login")).one()
        return row


def test_login_when_behind_trusted_proxy_logs_the_forwarded_client_address(
    db_url: str, tmp_path: Path
) -> None:
    env = make_env(db_url, tmp_path, trust_proxy=1)
    try:
        signed_in(env, "alice")  # creates the user; the login row of this sign-in is discarded below
        with env.database.session() as s:
            s.execute(ActivityLog.__table__.delete())
        client = client_at(env, {"REMOTE_ADDR": "10.0.0.2"})
        token = csrf_token(client, "/login")
        response = client.post(
            "/login",
            data={"username": "alice", "password": "correct horse battery staple", "csrf_token": token},
            # Seen as HTTPS, so Flask-WTF also checks the Referer is this site (browsers send it).
            headers={
                "X-Forwarded-For": "203.0.113.7",
                "X-Forwarded-Proto": "https",
                "Referer": "https://localhost/login",
            },
        )
        assert response.status_code == 303
        assert response.headers["Location"] == "/"
        assert _login_row(env).ip_address == "203.0.113.7"
    finally:
        env.database.dispose()


def test_login_when_no_proxy_trusted_ignores_forged_forwarded_header(env: WebEnv) -> None:
    signed_in(env, "alice")
    with env.database.session() as s:
        s.execute(ActivityLog.__table__.delete())
    client = client_at(env, {"REMOTE_ADDR": "10.0.0.2"})
    token = csrf_token(client, "/login")
    client.post(
        "/login",
        data={"username": "alice", "password": "correct horse battery staple", "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert _login_row(env).ip_address == "10.0.0.2"


def test_rate_limit_when_behind_trusted_proxy_counts_per_forwarded_client(
    db_url: str, tmp_path: Path
) -> None:
    env = make_env(db_url, tmp_path, trust_proxy=1, ratelimit_auth="2 per minute")
    try:
        proxy = client_at(env, {"REMOTE_ADDR": "10.0.0.2"})
        first = [
            proxy.get("/login", headers={"X-Forwarded-For": "198.51.100.1"}).status_code for _ in range(3)
        ]
        assert first[-1] == 429
        # Same proxy socket, different client behind it: its own budget.
        assert proxy.get("/login", headers={"X-Forwarded-For": "198.51.100.2"}).status_code != 429
    finally:
        env.database.dispose()


# --- activity trail ---------------------------------------------------------------------------------


def test_activity_when_user_works_through_the_app_records_each_step_with_ip_and_agent(env: WebEnv) -> None:
    admin = client_at(env, {"REMOTE_ADDR": "192.0.2.10", "HTTP_USER_AGENT": "TrailBrowser/1.0"})
    password = "correct horse battery staple"
    register = {"username": "root", "email": "root@example.com", "password": password, "password2": password}
    assert post_form(admin, "/register", register, page="/register").status_code == 303
    login(admin, "root", "a wrong password here")
    assert login(admin, "root", password).status_code == 303
    add_account(admin, "Trail main")
    account_id = env.accounts("root")[0].id
    edit = {**ACCOUNT_FORM, "account_name": "Trail renamed", "host_url": env.accounts("root")[0].host_url}
    assert post_form(admin, f"/accounts/{account_id}/edit", edit, page="/accounts/").status_code == 303
    assert post_form(admin, "/admin/signup", page="/admin/").status_code == 303
    new_password = "another long passphrase 42"
    change = {"current_password": password, "new_password": new_password, "new_password2": new_password}
    assert post_form(admin, "/settings/password", change, page="/settings/").status_code == 303
    assert post_form(admin, f"/accounts/{account_id}/delete", page="/accounts/").status_code == 303
    assert post_form(admin, "/logout", page="/accounts/").status_code == 303
    with env.database.session_factory() as s:
        rows = list(s.scalars(select(ActivityLog).order_by(ActivityLog.id)))
    actions = [r.action for r in rows]
    for expected in (
        "register",
        "login_failed",
        "login",
        "account_created",
        "account_updated",
        "settings_changed",
        "password_changed",
        "account_deleted",
        "logout",
    ):
        assert expected in actions, (expected, actions)
    root_id = env.user("root").id
    for row in rows:
        assert row.user_id == root_id, row.action
        assert row.ip_address == "192.0.2.10" and row.user_agent == "TrailBrowser/1.0", row.action
    # The page shows them in IST (the test clock is 09:30 IST).
    viewer = signed_in(env, "root", password=new_password)
    html = viewer.get("/activity/").get_data(as_text=True)
    assert "09:30:00 IST" in html and "TrailBrowser/1.0" in html and "account_deleted" in html


# --- UI shell ---------------------------------------------------------------------------------------

NAV = ("Dashboard", "Accounts", "Strategies", "Risk", "Settings")


def _nav_links(html: str) -> dict[str, str]:
    nav = html.split('<nav class="mainnav"', 1)[1].split("</nav>", 1)[0]
    return {label: href for href, label in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav)}


def test_navigation_when_admin_signed_in_shows_every_area_and_each_link_works(env: WebEnv) -> None:
    admin = signed_in(env, "admin")
    links = _nav_links(admin.get("/accounts/").get_data(as_text=True))
    for label in (*NAV, "Admin"):
        assert label in links, label
        # (The dashboard sends a user without accounts on to "add an account".)
        assert admin.get(links[label], follow_redirects=True).status_code == 200, label
    bob = signed_in(env, "bob")
    bob_links = _nav_links(bob.get("/accounts/").get_data(as_text=True))
    assert set(NAV) <= set(bob_links) and "Admin" not in bob_links


def test_shell_when_served_has_vendored_scripts_and_a_small_screen_layout(env: WebEnv) -> None:
    client = env.client()
    html = client.get("/register").get_data(as_text=True)
    for script in ("/static/vendor/htmx.min.js", "/static/vendor/alpine-csp.min.js", "/static/js/app.js"):
        assert f'src="{script}"' in html
        response = client.get(script)
        assert response.status_code == 200 and "javascript" in response.mimetype
        assert len(response.get_data()) > 1000 or script.endswith("app.js")
    assert "http://" not in html.split("<body", 1)[0] and "https://" not in html.split("<body", 1)[0]
    css = client.get("/static/css/app.css").get_data(as_text=True)
    assert re.search(r"@media\s*\(max-width:\s*\d+px\)", css)
    assert 'name="viewport"' in html


def test_forms_when_rendered_post_to_a_url_with_a_csrf_field_so_they_work_without_js(env: WebEnv) -> None:
    admin = signed_in(env, "admin")
    add_account(admin, "Form check")
    account_id = env.accounts("admin")[0].id
    pages = ["/accounts/", "/accounts/new", f"/accounts/{account_id}/edit", f"/accounts/{account_id}/delete"]
    pages += ["/settings/", "/admin/"]
    seen = 0
    for page in pages:
        html = admin.get(page).get_data(as_text=True)
        for form in re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S):
            opening = form.split(">", 1)[0]
            if 'method="get"' in opening:
                continue
            seen += 1
            assert 'method="post"' in opening and 'action="/' in opening, (page, opening)
            assert 'name="csrf_token"' in form, (page, opening)
    assert seen >= 8
    for page in ("/login", "/register"):
        anon = env.client()
        for form in re.findall(r"<form\b[^>]*>.*?</form>", anon.get(page).get_data(as_text=True), flags=re.S):
            assert 'name="csrf_token"' in form and 'action="/' in form.split(">", 1)[0], page


# --- secrets in logs --------------------------------------------------------------------------------


def test_logging_when_database_password_logged_by_mistake_is_redacted(tmp_path: Path) -> None:
    import io
    import logging

    from algomirror.config import load_settings
    from algomirror.db.session import Database
    from algomirror.security import install_redaction
    from algomirror.web import create_app

    settings = load_settings(
        instance_dir=tmp_path / "instance",
        database_url="postgresql+psycopg://algo:db-Pass-7421-zq@db.invalid:5432/algomirror",
        demo=False,
    )
    database = Database(f"sqlite:///{tmp_path / 'unused.db'}")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("algomirror.test_db_password")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        create_app(settings, database=database)
        install_redaction(logger=logger)
        logger.warning("connecting with %s", settings.database_url)
    finally:
        logger.removeHandler(handler)
        database.dispose()
    assert "db-Pass-7421-zq" not in stream.getvalue() and "[REDACTED]" in stream.getvalue()


def test_hsts_when_secure_cookies_on_is_sent_and_otherwise_not(db_url: str, tmp_path: Path) -> None:
    https = make_env(db_url, tmp_path / "a", secure_cookies=True)
    # Explicitly off: production mode turns secure cookies on unless told otherwise.
    plain = make_env(db_url, tmp_path / "b", secure_cookies=False)
    try:
        assert https.client().get("/login").headers["Strict-Transport-Security"] == "max-age=31536000"
        assert "Strict-Transport-Security" not in plain.client().get("/login").headers
    finally:
        https.database.dispose()
        plain.database.dispose()
