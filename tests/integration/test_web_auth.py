"""Sign-up, sign-in, lock-out, sessions and password change, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from algomirror.db.models import User
from algomirror.security import make_password_hasher
from algomirror.web.auth import service
from tests.integration.web_support import (
    PASSWORD,
    WebEnv,
    add_user,
    csrf_token,
    login,
    make_env,
    open_signup,
    post_form,
    register,
    signed_in,
)


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


def test_landing_when_no_user_exists_offers_to_create_the_administrator(env: WebEnv) -> None:
    client = env.client()
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/register")
    page = client.get("/register").get_data(as_text=True)
    assert "Create the administrator" in page
    assert client.get("/login").headers["Location"].endswith("/register")


def test_register_when_first_user_makes_an_admin_and_closes_signup(env: WebEnv) -> None:
    client = env.client()
    response = register(client, "Alice", email="Alice@Example.COM")
    assert response.status_code == 303 and response.headers["Location"].endswith("/login")
    alice = env.user("alice")
    assert alice.is_admin and alice.email == "alice@example.com"
    assert alice.password_hash.startswith("$argon2id$") and PASSWORD not in alice.password_hash
    assert env.actions("alice") == ["register"]
    # Sign-up is now closed for everyone else.
    other = env.client()
    assert other.get("/register").status_code == 403
    assert "Sign-up is closed" in other.get("/register").get_data(as_text=True)


def test_register_when_signup_closed_post_is_refused_and_nothing_changes(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    token = csrf_token(client, "/login")
    response = client.post(
        "/register",
        data={
            "csrf_token": token,
            "username": "bob",
            "email": "bob@example.com",
            "password": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert response.status_code == 403
    with env.database.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1


def test_register_when_admin_opened_signup_creates_a_plain_user(env: WebEnv) -> None:
    add_user(env, "alice")
    open_signup(env)
    response = register(env.client(), "bob")
    assert response.status_code == 303
    assert not env.user("bob").is_admin


@pytest.mark.parametrize(
    ("username", "email", "password", "password2", "message"),
    [
        ("ab", "ab@example.com", PASSWORD, PASSWORD, "Username must be 3–20 characters"),
        ("x" * 10_000, "x@example.com", PASSWORD, PASSWORD, "Username must be 3–20 characters"),
        ("bad name", "bad@example.com", PASSWORD, PASSWORD, "letters, digits"),
        ("carol", "not-an-email", PASSWORD, PASSWORD, "valid email"),
        ("carol", "carol@example.com", PASSWORD, PASSWORD + "x", "The two passwords differ"),
        ("carol", "carol@example.com", "short", "short", "at least 12"),
        ("carol", "carol@example.com", "carol-is-my-name", "carol-is-my-name", "username"),
        ("carol", "carol@example.com", "password1234", "password1234", "too common"),
        ("carol", "c" * 10_000 + "@example.com", PASSWORD, PASSWORD, "Email is too long"),
        ("carol", "carol@example.com", "p" * 10_000, "p" * 10_000, "Password is too long"),
    ],
)
def test_register_when_input_is_bad_shows_message_and_creates_nothing(
    env: WebEnv, username: str, email: str, password: str, password2: str, message: str
) -> None:
    client = env.client()
    response = post_form(
        client,
        "/register",
        {"username": username, "email": email, "password": password, "password2": password2},
        page="/register",
    )
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    with env.database.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 0


def test_register_when_username_or_email_taken_in_other_case_refuses(env: WebEnv) -> None:
    add_user(env, "alice")
    open_signup(env)
    page = register(env.client(), "ALICE", email="new@example.com").get_data(as_text=True)
    assert "That username is taken" in page
    page = register(env.client(), "alice2", email="ALICE@example.com").get_data(as_text=True)
    assert "already registered" in page


def test_create_user_when_two_first_signups_race_makes_exactly_one_admin(env: WebEnv) -> None:
    hasher = make_password_hasher(cheap=True)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def sign_up(name: str) -> None:
        try:
            barrier.wait(timeout=10)
            with env.database.session() as s:
                service.create_user(
                    s,
                    hasher,
                    username=name,
                    email=f"{name}@example.com",
                    password=PASSWORD,
                    require_open_signup=True,
                )
        except service.UserError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sign_up, args=(n,)) for n in ("first1", "first2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    with env.database.session_factory() as s:
        users = s.scalars(select(User)).all()
    # Exactly one became the administrator; the other saw sign-up closed.
    assert len(users) == 1 and users[0].is_admin
    assert len(errors) == 1 and "closed" in str(errors[0])


def test_login_when_credentials_are_right_signs_in_and_logs_ip_and_agent(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    response = login(client, "ALICE")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert client.get("/accounts/").status_code == 200
    from algomirror.db.models import ActivityLog

    with env.database.session_factory() as s:
        row = s.scalars(select(ActivityLog).where(ActivityLog.action == "login")).one()
    assert row.ip_address == "127.0.0.1" and row.user_agent and row.user_id == env.user("alice").id
    assert env.user("alice").last_login is not None


def test_login_when_password_wrong_refuses_and_logs_failure(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    response = login(client, "alice", "wrong-password-123")
    assert response.status_code == 200
    assert "Wrong username or password" in response.get_data(as_text=True)
    assert client.get("/accounts/").status_code == 302
    assert env.actions("alice") == ["login_failed"]
    # An unknown username gets the same answer and is logged too.
    response = login(env.client(), "nobody", "wrong-password-123")
    assert "Wrong username or password" in response.get_data(as_text=True)
    assert env.actions(None)[-1] == "login_failed"


def test_login_when_five_failures_in_15_minutes_locks_then_unlocks_after_15(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    for _ in range(5):
        env.clock.advance(timedelta(minutes=1))
        assert "Wrong username" in login(client, "alice", "wrong-password-123").get_data(as_text=True)
    env.clock.advance(timedelta(minutes=1))
    # Locked: the right password gets the same answer as a wrong one.
    response = login(client, "alice")
    assert response.status_code == 200 and "Wrong username or password" in response.get_data(as_text=True)
    assert client.get("/accounts/").status_code == 302
    env.clock.advance(timedelta(minutes=13))  # 14 minutes after the fifth failure: still locked
    assert login(client, "alice").status_code == 200
    env.clock.advance(timedelta(minutes=1, seconds=1))
    assert login(client, "alice").status_code == 303
    assert env.actions("alice").count("login_locked") == 2


def test_login_when_failures_are_spread_over_more_than_15_minutes_does_not_lock(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    for _ in range(6):
        env.clock.advance(timedelta(minutes=4))
        login(client, "alice", "wrong-password-123")
    assert login(client, "alice").status_code == 303


def test_login_when_locked_from_another_process_is_refused_here_too(
    env: WebEnv, db_url: str, tmp_path: Path
) -> None:
    add_user(env, "alice")
    other = make_env(db_url, tmp_path)  # a second app = a second worker process sharing the database
    other.clock.set(env.clock.now())
    for _ in range(5):
        login(other.client(), "alice", "wrong-password-123")
    assert login(env.client(), "alice").status_code == 200  # the right password, refused
    assert env.actions("alice")[-1] == "login_locked"
    other.database.dispose()


def test_login_when_user_deactivated_refuses_with_clear_message(env: WebEnv) -> None:
    add_user(env, "alice")
    add_user(env, "bob")
    with env.database.session() as s:
        s.scalar(select(User).where(User.username == "bob")).is_active = False  # type: ignore[union-attr]
    page = login(env.client(), "bob").get_data(as_text=True)
    assert "deactivated" in page


def test_login_when_user_deactivated_while_signed_in_ends_the_session(env: WebEnv) -> None:
    add_user(env, "alice")
    client = signed_in(env, "bob")
    assert client.get("/accounts/").status_code == 200
    with env.database.session() as s:
        s.scalar(select(User).where(User.username == "bob")).is_active = False  # type: ignore[union-attr]
    assert client.get("/accounts/").status_code == 302


@pytest.mark.parametrize(
    ("next_value", "expected"),
    [
        ("/accounts/", "/accounts/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
    ],
)
def test_login_when_next_given_redirects_only_to_same_site_paths(
    env: WebEnv, next_value: str, expected: str
) -> None:
    add_user(env, "alice")
    client = env.client()
    response = post_form(client, "/login", {"username": "alice", "password": PASSWORD, "next": next_value})
    assert response.status_code == 303
    assert response.headers["Location"] == expected


def test_logout_when_posted_with_token_signs_out_and_get_is_not_allowed(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no CSRF token
    assert client.get("/accounts/").status_code == 200
    response = post_form(client, "/logout", page="/accounts/")
    assert response.status_code == 303
    assert client.get("/accounts/").status_code == 302
    assert env.actions("alice")[-1] == "logout"


def test_remember_me_when_session_cookie_lost_keeps_user_signed_in(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    login(client, "alice", remember=True)
    remember = client.get_cookie("algomirror_remember")
    assert remember is not None and remember.http_only
    assert remember.expires is not None
    client.delete_cookie("algomirror_session")
    assert client.get("/accounts/").status_code == 200

    plain = env.client()
    login(plain, "alice")
    assert plain.get_cookie("algomirror_remember") is None
    plain.delete_cookie("algomirror_session")
    assert plain.get("/accounts/").status_code == 302


def test_session_when_idle_longer_than_12_hours_ends(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    env.clock.advance(timedelta(hours=11, minutes=59))
    assert client.get("/accounts/").status_code == 200
    env.clock.advance(timedelta(hours=12, minutes=1))
    assert client.get("/accounts/").status_code == 302


def test_cookies_when_signed_in_are_httponly_lax_and_secure_when_configured(
    db_url: str, tmp_path: Path
) -> None:
    env = make_env(db_url, tmp_path, secure_cookies=True)
    add_user(env, "alice")
    client = env.client()
    response = post_form(client, "/login", {"username": "alice", "password": PASSWORD, "remember": "y"})
    cookies = response.headers.getlist("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("algomirror_session="))
    remember_cookie = next(c for c in cookies if c.startswith("algomirror_remember="))
    for cookie in (session_cookie, remember_cookie):
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    env.database.dispose()


def test_change_password_when_current_is_right_ends_other_sessions_but_keeps_this_one(env: WebEnv) -> None:
    add_user(env, "alice")
    this = env.client()
    login(this, "alice")
    other = env.client()
    login(other, "alice", remember=True)
    new = "a-brand-new-passphrase"
    response = post_form(
        this,
        "/settings/password",
        {"current_password": PASSWORD, "new_password": new, "new_password2": new},
        page="/settings/",
    )
    assert response.status_code == 303
    assert this.get("/accounts/").status_code == 200
    assert other.get("/accounts/").status_code == 302
    other.delete_cookie("algomirror_session")
    assert other.get("/accounts/").status_code == 302  # the remember-me cookie is dead too
    assert "password_changed" in env.actions("alice")
    assert login(env.client(), "alice", new).status_code == 303


def test_change_password_when_current_is_wrong_refuses_and_keeps_old(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    before = env.user("alice").password_hash
    response = post_form(
        client,
        "/settings/password",
        {
            "current_password": "not-my-password",
            "new_password": "a-brand-new-passphrase",
            "new_password2": "a-brand-new-passphrase",
        },
        page="/settings/",
    )
    assert response.status_code == 400
    assert "Current password is wrong" in response.get_data(as_text=True)
    assert env.user("alice").password_hash == before


def test_login_when_hash_parameters_changed_rehashes(env: WebEnv) -> None:
    add_user(env, "alice")
    before = env.user("alice").password_hash
    from argon2 import PasswordHasher

    env.state.hasher = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    assert login(env.client(), "alice").status_code == 303
    after = env.user("alice").password_hash
    assert after != before and "t=2" in after
    assert login(env.client(), "alice").status_code == 303


def test_login_when_fields_are_oversized_refuses_with_message_and_logs_no_session(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    response = post_form(
        client, "/login", {"username": "a" * 10_000, "password": "p" * 10_000}, page="/login"
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Username is too long" in html and "Password is too long" in html
    assert client.get("/accounts/").status_code == 302


def test_register_when_every_field_is_invalid_shows_each_fields_error_in_one_reply(env: WebEnv) -> None:
    client = env.client()
    response = post_form(
        client,
        "/register",
        {"username": "a b", "email": "not-an-address", "password": "short", "password2": "short"},
        page="/register",
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="username-error"' in page and "Username must be 3–20 characters" in page
    assert 'id="email-error"' in page and "Enter a valid email address" in page
    assert 'id="password-error"' in page
    with env.database.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 0


def test_register_when_form_and_rule_errors_mix_shows_both_in_one_reply(env: WebEnv) -> None:
    client = env.client()
    response = post_form(
        client,
        "/register",
        {"username": "bad name!", "email": "carol@example.com", "password": "password1234", "password2": "x"},
        page="/register",
    )
    page = response.get_data(as_text=True)
    assert "The two passwords differ." in page
    assert 'id="username-error"' in page and 'id="password-error"' in page


def test_register_when_username_and_email_both_taken_says_so_for_both(env: WebEnv) -> None:
    add_user(env, "alice")
    open_signup(env)
    page = register(env.client(), "ALICE", email="alice@example.com").get_data(as_text=True)
    assert "That username is taken" in page and "already registered" in page


def test_login_page_when_signup_is_open_links_to_sign_up_and_not_when_closed(env: WebEnv) -> None:
    add_user(env, "alice")
    client = env.client()
    assert 'href="/register"' not in client.get("/login").get_data(as_text=True)
    open_signup(env)
    page = client.get("/login").get_data(as_text=True)
    assert 'href="/register"' in page and "Sign up" in page
    with env.database.session() as s:
        service.set_signup_enabled(s, False)
    assert 'href="/register"' not in client.get("/login").get_data(as_text=True)


@pytest.mark.parametrize("page", ["/register", "/login"])
def test_auth_forms_when_rendered_carry_no_maxlength_that_would_cut_a_paste(env: WebEnv, page: str) -> None:
    add_user(env, "alice")
    open_signup(env)
    html = env.client().get(page).get_data(as_text=True)
    assert 'name="username"' in html and "maxlength" not in html


def test_register_when_username_pasted_500_characters_long_refuses_inline_and_cuts_nothing(
    env: WebEnv,
) -> None:
    client = env.client()
    pasted = "a" * 500
    response = register(client, pasted)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="username-error"' in page and "Username must be 3–20 characters" in page
    assert "maxlength" not in page
    with env.database.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize("page", ["/accounts/new", "/settings/"])
def test_signed_in_forms_when_rendered_carry_no_maxlength_that_would_cut_a_paste(
    env: WebEnv, page: str
) -> None:
    client = signed_in(env, "alice")
    response = client.get(page, follow_redirects=True)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<input" in html and "maxlength" not in html
