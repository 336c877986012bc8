"""Sign-out and server-side sessions (issue 9, findings 1 and 6), on SQLite and PostgreSQL.

Every session is a ``user_sessions`` row: sign-out, a password change, deactivation and an
administrator's "sign out everywhere" end it at once, so a copied cookie stops working; sessions have an
absolute lifetime besides the idle one; the settings page lists them with sign-out per row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import event, select

from algomirror.db.models import UserSession
from algomirror.domain.timeutil import format_ist
from algomirror.web.auth.sessions import describe_agent
from tests.integration.web_support import (
    PASSWORD,
    WebEnv,
    add_user,
    login,
    make_env,
    post_form,
    signed_in,
)

SESSION_COOKIE = "algomirror_session"
REMEMBER_COOKIE = "algomirror_remember"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


def client_at(env: WebEnv, *, address: str = "127.0.0.1", agent: str = FIREFOX_LINUX) -> FlaskClient:
    client = env.client()
    client.environ_base.update({"REMOTE_ADDR": address, "HTTP_USER_AGENT": agent})
    return client


def copy_cookies(source: FlaskClient, target: FlaskClient, *names: str) -> None:
    """Put ``source``'s cookies ``names`` into ``target``, as a thief who copied them would."""
    for name in names:
        cookie = source.get_cookie(name)
        assert cookie is not None, name
        target.set_cookie(name, cookie.value)


def signed_in_now(client: FlaskClient) -> bool:
    response = client.get("/accounts/")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def session_rows(env: WebEnv, username: str) -> list[UserSession]:
    uid = env.user(username).id
    with env.database.session_factory() as s:
        return list(s.scalars(select(UserSession).where(UserSession.user_id == uid).order_by(UserSession.id)))


def logout(client: FlaskClient) -> Any:
    return post_form(client, "/logout", page="/accounts/")


# --- finding 1: sign-out with remember-me ------------------------------------------------------------


def test_logout_when_remember_me_was_ticked_deletes_the_cookie_and_stays_signed_out(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    login(client, "alice", remember=True)
    assert client.get_cookie(REMEMBER_COOKIE) is not None
    response = logout(client)
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    deletions = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{REMEMBER_COOKIE}=")]
    assert deletions and all("Expires=Thu, 01 Jan 1970" in c for c in deletions), deletions
    assert client.get_cookie(REMEMBER_COOKIE) is None
    # The sign-in page shows the form (it would bounce a signed-in browser to the dashboard) ...
    page = client.get("/login")
    assert page.status_code == 200 and "You are signed out" in page.get_data(as_text=True)
    assert client.get("/login").status_code == 200
    # ... and a protected page still sends the browser to sign in.
    assert client.get("/accounts/").status_code == 302


def test_logout_when_remember_cookie_was_copied_before_the_replay_is_signed_out(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    login(client, "alice", remember=True)
    thief = env.client()
    copy_cookies(client, thief, REMEMBER_COOKIE)
    assert signed_in_now(thief)  # the copy works while the session lives
    logout(client)
    fresh = env.client()
    copy_cookies(thief, fresh, REMEMBER_COOKIE)
    assert not signed_in_now(fresh)


# --- finding 6: server-side sessions -----------------------------------------------------------------


def test_logout_when_session_cookie_was_copied_replay_is_signed_out(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    copy = env.client()
    copy_cookies(client, copy, SESSION_COOKIE)
    assert signed_in_now(copy)
    logout(client)
    assert not signed_in_now(copy)
    assert session_rows(env, "alice") == []


def test_login_when_signed_in_records_one_session_with_address_agent_and_absolute_end(env: WebEnv) -> None:
    add_user(env, "alice")
    client = client_at(env, address="10.1.2.3", agent=CHROME_ANDROID)
    assert login(client, "alice").status_code == 303
    [row] = session_rows(env, "alice")
    assert row.ip_address == "10.1.2.3" and row.user_agent == CHROME_ANDROID and not row.remember
    assert row.created_at == env.clock.now() and row.expires_at == env.clock.now() + timedelta(days=7)
    # The cookie holds a token; the table only its hash.
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie is not None and row.key_hash not in cookie.value
    # Signing in again in the same browser (here after the idle limit) replaces its session.
    env.clock.advance(timedelta(hours=13))
    assert not signed_in_now(client)
    assert login(client, "alice").status_code == 303
    assert len(session_rows(env, "alice")) == 1


def test_session_when_used_every_few_hours_still_ends_at_the_absolute_lifetime(env: WebEnv) -> None:
    add_user(env, "alice")
    plain, remembered = env.client(), env.client()
    login(plain, "alice")
    login(remembered, "alice", remember=True)
    for _ in range(27):  # 6.75 days of use, every 6 hours
        env.clock.advance(timedelta(hours=6))
        assert signed_in_now(plain) and signed_in_now(remembered)
    env.clock.advance(timedelta(hours=6))  # 7 days and 0 minutes after sign-in
    assert not signed_in_now(plain)
    assert not signed_in_now(remembered)
    remembered.delete_cookie(SESSION_COOKIE)
    assert not signed_in_now(remembered)  # the remember-me cookie alone does not bring it back


def test_remember_cookie_when_set_lasts_no_longer_than_the_absolute_lifetime(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    before = datetime.now(UTC)
    login(client, "alice", remember=True)
    cookie = client.get_cookie(REMEMBER_COOKIE)
    assert cookie is not None and cookie.expires is not None
    expires = cookie.expires if cookie.expires.tzinfo else cookie.expires.replace(tzinfo=UTC)
    assert expires <= before + timedelta(days=7, minutes=1)
    assert "Remember me for 7 days" in env.client().get("/login").get_data(as_text=True)


def test_remember_me_when_idle_longer_than_12_hours_survives_but_a_plain_session_ends(env: WebEnv) -> None:
    add_user(env, "alice")
    plain, remembered = env.client(), env.client()
    login(plain, "alice")
    login(remembered, "alice", remember=True)
    env.clock.advance(timedelta(hours=13))
    assert not signed_in_now(plain)
    assert signed_in_now(remembered)


def test_password_change_when_done_ends_the_other_session_records_and_keeps_this_one(env: WebEnv) -> None:
    add_user(env, "alice")
    this, other = env.client(), env.client()
    login(this, "alice", remember=True)
    login(other, "alice", remember=True)
    assert len(session_rows(env, "alice")) == 2
    new = "a-brand-new-passphrase"
    response = post_form(
        this,
        "/settings/password",
        {"current_password": PASSWORD, "new_password": new, "new_password2": new},
        page="/settings/",
    )
    assert response.status_code == 303
    assert len(session_rows(env, "alice")) == 1
    assert signed_in_now(this) and not signed_in_now(other)
    this.delete_cookie(SESSION_COOKIE)
    assert signed_in_now(this)  # its re-issued remember-me cookie still maps to the kept session


def test_reset_password_command_when_run_ends_every_session(env: WebEnv, db_url: str, tmp_path: Path) -> None:
    from algomirror.cli import main

    client = signed_in(env, "alice")
    new = "quiet-meadow-lantern-42"
    result = CliRunner().invoke(
        main,
        ["user", "reset-password", "alice"],
        input=f"{new}\n{new}\n",
        env={"ALGOMIRROR_DATABASE_URL": db_url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance")},
    )
    assert result.exit_code == 0, result.output
    assert session_rows(env, "alice") == []
    assert not signed_in_now(client)


def test_deactivate_when_user_is_reactivated_later_old_sessions_stay_ended(env: WebEnv) -> None:
    admin = signed_in(env, "root")
    bob = signed_in(env, "bob")
    bob_remembered = env.client()
    login(bob_remembered, "bob", remember=True)
    bob_id = env.user("bob").id
    assert post_form(admin, f"/admin/users/{bob_id}/deactivate", page="/admin/").status_code == 303
    assert session_rows(env, "bob") == []
    assert post_form(admin, f"/admin/users/{bob_id}/activate", page="/admin/").status_code == 303
    assert not signed_in_now(bob)
    bob_remembered.delete_cookie(SESSION_COOKIE)
    assert not signed_in_now(bob_remembered)
    assert login(env.client(), "bob").status_code == 303  # a new sign-in works again


def test_admin_sign_out_everywhere_when_posted_ends_every_session_of_that_user_only(env: WebEnv) -> None:
    admin = signed_in(env, "root")
    bob = signed_in(env, "bob")
    bob_remembered = env.client()
    login(bob_remembered, "bob", remember=True)
    bob_id = env.user("bob").id
    page = admin.get("/admin/").get_data(as_text=True)
    assert f'action="/admin/users/{bob_id}/sign-out"' in page
    response = post_form(admin, f"/admin/users/{bob_id}/sign-out", page="/admin/")
    assert response.status_code == 303
    assert not signed_in_now(bob)
    bob_remembered.delete_cookie(SESSION_COOKIE)
    assert not signed_in_now(bob_remembered)
    assert signed_in_now(admin)
    assert "user_signed_out" in env.actions("root")
    assert post_form(admin, "/admin/users/99999/sign-out", page="/admin/").status_code == 404


def test_admin_sign_out_everywhere_when_posted_by_a_plain_user_is_403_and_ends_nothing(env: WebEnv) -> None:
    signed_in(env, "root")
    bob = signed_in(env, "bob")
    root_id = env.user("root").id
    assert post_form(bob, f"/admin/users/{root_id}/sign-out", page="/accounts/").status_code == 403
    assert len(session_rows(env, "root")) == 1


def test_settings_when_signed_in_twice_lists_both_sessions_and_marks_this_one(env: WebEnv) -> None:
    add_user(env, "alice")
    laptop = client_at(env, address="10.0.0.5", agent=FIREFOX_LINUX)
    phone = client_at(env, address="10.0.0.6", agent=CHROME_ANDROID)
    login(laptop, "alice")
    env.clock.advance(timedelta(minutes=5))
    login(phone, "alice")
    html = laptop.get("/settings/").get_data(as_text=True)
    assert "Your sessions" in html
    rows = re.findall(r"<tr>\s*<td>(.*?)</tr>", html, flags=re.S)
    assert len(rows) == 2
    phone_row, laptop_row = rows  # most recently seen first
    assert "Chrome on Android" in phone_row and "10.0.0.6" in phone_row and "this session" not in phone_row
    assert "Firefox on Linux" in laptop_row and "10.0.0.5" in laptop_row and "this session" in laptop_row
    assert format_ist(env.clock.now(), "%d %b %Y %H:%M") in phone_row  # last seen, in IST


def test_settings_when_one_session_is_signed_out_that_browser_is_out_and_this_one_stays(env: WebEnv) -> None:
    add_user(env, "alice")
    laptop, phone = env.client(), env.client()
    login(laptop, "alice")
    login(phone, "alice")
    phone_row = session_rows(env, "alice")[1]
    response = post_form(laptop, f"/settings/sessions/{phone_row.id}/end", page="/settings/")
    assert response.status_code == 303 and response.headers["Location"] == "/settings/"
    assert not signed_in_now(phone)
    assert signed_in_now(laptop)
    assert "session_ended" in env.actions("alice")


def test_settings_when_this_session_is_signed_out_from_the_list_signs_this_browser_out(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    login(client, "alice", remember=True)
    [row] = session_rows(env, "alice")
    response = post_form(client, f"/settings/sessions/{row.id}/end", page="/settings/")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert client.get_cookie(REMEMBER_COOKIE) is None
    assert not signed_in_now(client)


def test_settings_when_another_users_session_id_is_posted_gives_404_and_it_lives_on(env: WebEnv) -> None:
    alice = signed_in(env, "alice")
    bob = signed_in(env, "bob")
    [bob_row] = session_rows(env, "bob")
    for session_id in (bob_row.id, 99999, 2**63):
        response = post_form(alice, f"/settings/sessions/{session_id}/end", page="/settings/")
        assert response.status_code == 404, session_id
    assert signed_in_now(bob)
    assert f"/settings/sessions/{bob_row.id}/end" not in alice.get("/settings/").get_data(as_text=True)


def test_settings_when_sign_out_others_is_posted_keeps_only_this_session(env: WebEnv) -> None:
    add_user(env, "alice")
    this, second, third = env.client(), env.client(), env.client()
    for client in (this, second, third):
        login(client, "alice")
    assert post_form(this, "/settings/sessions/end-others", page="/settings/").status_code == 303
    assert signed_in_now(this) and not signed_in_now(second) and not signed_in_now(third)


def test_session_last_seen_when_requests_come_often_is_written_at_most_once_a_minute(env: WebEnv) -> None:
    add_user(env, "alice")
    client = client_at(env, address="10.0.0.5")
    login(client, "alice")
    signed_at = env.clock.now()
    env.clock.advance(timedelta(seconds=30))
    client.environ_base["REMOTE_ADDR"] = "10.0.0.9"
    assert signed_in_now(client)
    [row] = session_rows(env, "alice")
    assert row.last_seen_at == signed_at and row.ip_address == "10.0.0.5"
    env.clock.advance(timedelta(seconds=31))
    assert signed_in_now(client)  # a GET: written through its own short write session
    [row] = session_rows(env, "alice")
    assert row.last_seen_at == env.clock.now() and row.ip_address == "10.0.0.9"
    env.clock.advance(timedelta(minutes=2))
    assert post_form(client, "/settings/sessions/end-others", page="/settings/").status_code == 303
    [row] = session_rows(env, "alice")
    assert row.last_seen_at == env.clock.now()


def test_session_check_when_a_signed_in_page_loads_is_one_query_on_user_sessions(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(env.database.engine, "before_cursor_execute", record)
    try:
        assert client.get("/accounts/").status_code == 200
    finally:
        event.remove(env.database.engine, "before_cursor_execute", record)
    lookups = [s for s in statements if "user_sessions" in s and "key_hash" in s]
    assert len(lookups) == 1, lookups
    assert not any(s.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")) for s in statements)


def test_cookie_when_made_before_server_side_sessions_signs_nobody_in(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    uid = env.user("alice").id
    with client.session_transaction() as cookie_session:
        cookie_session["_user_id"] = f"{uid}:1"  # the old login id: user and session_version only
        cookie_session["_fresh"] = True
    assert not signed_in_now(client)


@pytest.mark.parametrize(
    ("agent", "device"),
    [
        (FIREFOX_LINUX, "Firefox on Linux"),
        (CHROME_ANDROID, "Chrome on Android"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.5 Mobile/15E148 Safari/604.1",
            "Safari on iOS",
        ),
        ("curl/8.5.0", "curl"),
        (None, "Unknown device"),
        ("???", "Unknown device"),
    ],
)
def test_describe_agent_when_given_a_user_agent_names_browser_and_system(
    agent: str | None, device: str
) -> None:
    assert describe_agent(agent) == device


def test_password_change_when_this_browser_cookie_was_copied_before_the_copy_is_signed_out(
    env: WebEnv,
) -> None:
    add_user(env, "alice")
    this, thief = env.client(), env.client()
    login(this, "alice", remember=True)
    copy_cookies(this, thief, SESSION_COOKIE, REMEMBER_COOKIE)
    assert signed_in_now(thief)
    new = "a-brand-new-passphrase"

    response = post_form(
        this,
        "/settings/password",
        {"current_password": PASSWORD, "new_password": new, "new_password2": new},
        page="/settings/",
    )

    assert response.status_code == 303
    assert signed_in_now(this) and not signed_in_now(thief)
    assert len(session_rows(env, "alice")) == 1
