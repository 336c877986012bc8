"""Control characters (newline, NUL, tab, DEL, C1, line separators, bidi overrides) are refused in every
free-text form field with an inline error, and nothing is saved (issue 9 finding 8)."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import pytest

from algomirror.controlchars import escape_control, first_control, is_control
from tests.integration.web_support import (
    WebEnv,
    make_env,
    open_signup,
    post_form,
    signed_in,
    unused_port,
)

BAD = ["Main\nERROR forged", "A\x00B", "tab\there", "del\x7fx", "c1\x85x", "sep\u2028x", "rtl\u202eexe.txt"]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


def account_form(**overrides: str) -> dict[str, str]:
    return {
        "account_name": "Main account",
        "broker": "zerodha",
        "host_url": f"http://127.0.0.1:{unused_port()}",
        "websocket_url": "ws://127.0.0.1:8765",
        "api_key": "control-chars-key-0001",
        "save_anyway": "y",  # no server there: the failed test is confirmed up front
        **overrides,
    }


def inline_error(body: str, label: str) -> bool:
    return f"{label} must not contain control characters" in html.unescape(body)


@pytest.mark.parametrize("name", BAD)
def test_new_account_when_name_holds_a_control_character_is_refused_inline_and_not_saved(
    env: WebEnv, name: str
) -> None:
    client = signed_in(env, "alice")
    response = post_form(client, "/accounts/new", account_form(account_name=name), page="/accounts/new")
    assert response.status_code == 400  # the form again, with the reason beside the field
    assert inline_error(response.get_data(as_text=True), "Account name")
    assert env.accounts("alice") == []


@pytest.mark.parametrize(
    ("field", "label", "value"),
    [
        ("websocket_url", "WebSocket URL", "ws://127.0.0.1:8765/\x00"),
        ("host_url", "Host URL", "http://127.0.0.1:5000/\x00"),
        ("api_key", "API key", "control-chars\x00key-0001"),
    ],
)
def test_new_account_when_another_text_field_holds_a_control_character_is_refused_inline(
    env: WebEnv, field: str, label: str, value: str
) -> None:
    client = signed_in(env, "alice")
    response = post_form(client, "/accounts/new", account_form(**{field: value}), page="/accounts/new")
    assert response.status_code == 400
    assert inline_error(response.get_data(as_text=True), label)
    assert env.accounts("alice") == []


def test_edit_account_when_name_gets_a_newline_is_refused_and_the_name_kept(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    response = post_form(client, "/accounts/new", account_form(), page="/accounts/new")
    assert response.status_code == 303
    account = env.accounts("alice")[0]
    page = f"/accounts/{account.id}/edit"
    data = account_form(account_name="Renamed\r\nERROR forged", host_url=account.host_url, api_key="")
    response = post_form(client, page, data, page=page)
    assert response.status_code == 400
    assert inline_error(response.get_data(as_text=True), "Account name")
    assert env.accounts("alice")[0].account_name == "Main account"


@pytest.mark.parametrize(("field", "label"), [("username", "Username"), ("email", "Email")])
def test_register_when_a_field_holds_a_control_character_is_refused_inline(
    env: WebEnv, field: str, label: str
) -> None:
    signed_in(env, "admin")
    open_signup(env)
    client = env.client()
    data = {
        "username": "carol",
        "email": "carol@example.com",
        "password": "a long enough passphrase 42",
        "password2": "a long enough passphrase 42",
    }
    data[field] = "carol\x00x" if field == "username" else "carol\u202e@example.com"
    response = post_form(client, "/register", data, page="/register")
    assert response.status_code == 200
    assert inline_error(response.get_data(as_text=True), label)
    with pytest.raises(AssertionError):
        env.user("carol")


def test_login_when_username_holds_a_newline_is_refused_inline(env: WebEnv) -> None:
    signed_in(env, "alice")
    client = env.client()
    response = post_form(client, "/login", {"username": "alice\x00\nERROR forged", "password": "x" * 12})
    assert response.status_code == 200
    assert inline_error(response.get_data(as_text=True), "Username")


def test_control_character_set_when_checked_covers_cc_separators_and_bidi_but_not_ordinary_text() -> None:
    for char in ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\u2066"]:
        assert is_control(char), repr(char)
        assert first_control(f"ab{char}cd") == char
    for text in ["Main account", "Nifty 50 – ₹ ₹", "Zerodha (Alice)", "👩‍💻 desk", "naïve café"]:
        assert first_control(text) is None, text
        assert escape_control(text) == text
    assert escape_control("a\nb\x00c\u202ed\r") == "a\\nb\\x00c\\u202ed\\r"
