"""Ids outside what the id columns hold (1..2^31-1: PostgreSQL ``integer``) are 404, never 500, on every
route that takes an id, walked from the app's URL map so a new route cannot slip through; query-string
ids too. Runs on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.routing import AnyConverter, IntegerConverter, Rule

from algomirror.web.ids import MAX_ID, IdConverter, parse_id
from tests.integration.web_support import WebEnv, csrf_token, make_env, post_form, signed_in, unused_port

OUT_OF_RANGE = [2**31, 2**63 - 1, 2**63, 2**64, 10**30]
# Path segments no id converter may accept: zero, huge digit strings, non-ASCII digits.
BAD_SEGMENTS = ["0", "9" * 25, "9" * 5000, "\u0661\u0662", "\u00b2"]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    # A crash must show up as the 500 a browser would get, not as an exception in the test.
    web.app.config["PROPAGATE_EXCEPTIONS"] = False
    yield web
    web.database.dispose()


def id_rules(env: WebEnv) -> list[Rule]:
    return sorted(
        (
            rule
            for rule in env.app.url_map.iter_rules()
            if any(isinstance(c, IntegerConverter) for c in rule._converters.values())
        ),
        key=lambda r: r.rule,
    )


def url_with(rule: Rule, segment: str) -> str:
    """``rule``'s path with every id argument replaced by ``segment`` verbatim (no converter check)."""
    path = rule.rule
    for name, converter in rule._converters.items():  # werkzeug keeps a rule's converters here
        assert isinstance(converter, IdConverter), f"{rule.rule}: {name} is not an <id:…> argument"
        path = path.replace(f"<id:{name}>", segment)
    assert "<" not in path, f"{rule.rule}: other arguments the walk does not fill"
    return path


def request_all(client: Any, rule: Rule, url: str, token: str) -> list[tuple[str, int]]:
    answers = []
    for method in sorted((rule.methods or set()) & {"GET", "POST"}):
        response = client.get(url) if method == "GET" else client.post(url, data={"csrf_token": token})
        answers.append((method, response.status_code))
    return answers


def pages_of(rule: Rule) -> list[str]:
    """Every concrete path of a rule whose arguments are all ``any(…)`` choices (none for other rules)."""
    paths = [rule.rule]
    for name, converter in rule._converters.items():
        if not isinstance(converter, AnyConverter):
            return []
        pattern = next(p for p in paths[0].split("/") if f":{name}>" in p)
        placeholder = pattern[pattern.index("<") : pattern.index(">") + 1]
        paths = [path.replace(placeholder, item) for path in paths for item in sorted(converter.items)]
    return paths


def signed_in_admin(env: WebEnv) -> Any:
    admin = signed_in(env, "admin")  # the first user is the administrator: admin routes are reached
    data = {
        "account_name": "Admin main",
        "broker": "zerodha",
        "host_url": f"http://127.0.0.1:{unused_port()}",
        "websocket_url": "ws://127.0.0.1:8765",
        "api_key": "ids-walk-key-0001",
        "save_anyway": "y",  # no server there: the failed test is confirmed up front
    }
    response = post_form(admin, "/accounts/new", data, page="/accounts/new")
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return admin


def test_every_id_route_when_id_exceeds_the_column_range_gives_404(env: WebEnv) -> None:
    admin = signed_in_admin(env)
    token = csrf_token(admin, "/accounts/")
    rules = id_rules(env)
    endpoints = {r.endpoint for r in rules}
    # The walk must cover every kind of id route (guards against an empty or broken walk).
    assert {
        "accounts.detail",
        "accounts.edit",
        "accounts.delete",
        "books.cancel_order",
        "books.account_overview",
        "admin.activate",
        "admin.make_admin",
    } <= endpoints, endpoints
    failures = []
    for rule in rules:
        for value in [*(str(v) for v in OUT_OF_RANGE), *BAD_SEGMENTS]:
            for method, status in request_all(admin, rule, url_with(rule, value), token):
                if status != 404:
                    failures.append(f"{method} {rule.rule} with {value[:30]}: {status}")
    assert failures == []
    # The routes still work with the admin's own, in-range ids (so the 404s are the range check).
    own = env.accounts("admin")[0].id
    assert admin.get(f"/accounts/{own}").status_code == 200
    assert admin.get(f"/accounts/{own}/overview").status_code == 200


def test_every_id_route_when_id_is_the_largest_in_range_gives_404_not_500(env: WebEnv) -> None:
    admin = signed_in_admin(env)
    token = csrf_token(admin, "/accounts/")
    failures = [
        f"{method} {rule.rule}: {status}"
        for rule in id_rules(env)
        for method, status in request_all(admin, rule, url_with(rule, str(MAX_ID)), token)
        if status != 404
    ]
    assert failures == []


@pytest.mark.parametrize("value", [*(str(v) for v in OUT_OF_RANGE), "9" * 5000, "\u00b2", "-1"])
def test_query_string_ids_when_out_of_range_never_give_500(env: WebEnv, value: str) -> None:
    admin = signed_in_admin(env)
    pages = sorted(
        page
        for rule in env.app.url_map.iter_rules()
        if "GET" in (rule.methods or set()) and rule.endpoint != "static"
        for page in pages_of(rule)
    )
    assert {"/orders", "/orders/live", "/orders.csv", "/activity/"} <= set(pages), pages
    failures = []
    for page in pages:
        response = admin.get(page, query_string={"account": value, "user": value, "page": value})
        # /readyz answers 503 by design here (no engine heartbeat in this app): not a crash.
        crashed = response.status_code >= 500 and not (page == "/readyz" and response.status_code == 503)
        if crashed:
            failures.append(f"{page}: {response.status_code}")
    assert failures == []
    # A well-formed number no account can have is the same 404 as an account that is not the user's.
    if value.isascii() and value.isdigit():
        for book in ("/orders", "/positions", "/trades"):
            assert admin.get(book, query_string={"account": value}).status_code == 404
        activity = admin.get("/activity/", query_string={"user": value})
        assert activity.status_code == 200
        assert "No entries match." in activity.get_data(as_text=True)  # names nobody, shows nothing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", 1),
        (" 42 ", 42),
        (str(MAX_ID), MAX_ID),
        ("007", 7),
        (str(MAX_ID + 1), None),
        (str(2**63), None),
        ("0", None),
        ("-1", None),
        ("", None),
        (None, None),
        ("\u00b2", None),
        ("\u0661", None),
        ("9" * 5000, None),
        ("1e3", None),
    ],
)
def test_parse_id_when_given_raw_text_returns_an_in_range_id_or_none(
    raw: str | None, expected: int | None
) -> None:
    assert parse_id(raw) == expected
