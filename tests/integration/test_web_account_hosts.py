"""Account host URLs through the web pages (issue 9): the form rebuilds or refuses them (finding 2), the
administrator's allow-list is enforced on save and on every connection test, and the stored API key only
ever goes to the saved host (finding 4). Real loopback servers record every request they get."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from algomirror.broker.hosts import HostPolicy
from algomirror.host_settings import load_host_policy, save_host_policy
from tests.integration.host_support import recording_server
from tests.integration.web_support import WebEnv, fake_openalgo, make_env, post_form, signed_in

KEY = "alpha-key-0001-WXYZ"
OTHER_KEY = "typed-again-0002-ABCD"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def admin(env: WebEnv) -> FlaskClient:
    return signed_in(env, "root")  # the first user is the administrator


@pytest.fixture
def alice(env: WebEnv, admin: FlaskClient) -> FlaskClient:
    return signed_in(env, "alice")


def form(name: str, host_url: str, **over: Any) -> dict[str, Any]:
    data = {
        "account_name": name,
        "broker": "zerodha",
        "host_url": host_url,
        "websocket_url": "ws://127.0.0.1:8765",
        "api_key": KEY,
        "save_anyway": "y",  # a failed connection test is confirmed up front
    }
    data.update(over)
    return data


def set_policy(env: WebEnv, policy: HostPolicy) -> None:
    with env.database.session() as s:
        save_host_policy(s, policy)


# ---------------------------------------------------------------------------- finding 2: URLs


def test_create_when_host_ends_in_query_refuses_inline_and_never_calls_sim_routes(
    env: WebEnv, alice: FlaskClient
) -> None:
    # The demo exploit: "http://127.0.0.1:18500/sim/reset?" made Test connection call /sim/reset.
    with recording_server() as server:
        crafted = form("Main", f"{server.url}/sim/reset?")
        tested = post_form(alice, "/accounts/new/test", crafted, page="/accounts/new")
        saved = post_form(alice, "/accounts/new", crafted, page="/accounts/new")
        assert server.requests == []
    for response in (tested, saved):
        assert response.status_code == 400
        html = response.get_data(as_text=True)
        assert "Host URL must not contain a query" in html and 'aria-invalid="true"' in html
    assert env.accounts("alice") == []


@pytest.mark.parametrize(
    ("host_url", "message"),
    [
        ("http://127.0.0.1:5000/#frag", "must not contain a fragment"),
        ("http://admin:secret@127.0.0.1:5000", "must not contain a user name or password"),
        ("http://127.0.0.1:5000/a b", "must not contain spaces or control characters"),
        ("http://127.0.0.1:5000/x/../sim", "path may contain only"),
        ("http://127.0.0.1:99999", "invalid port"),
        ("http://2130706433:5000", "full IP address"),
    ],
)
def test_create_when_host_url_has_forbidden_part_shows_reason_beside_field(
    env: WebEnv, alice: FlaskClient, host_url: str, message: str
) -> None:
    response = post_form(alice, "/accounts/new", form("Main", host_url), page="/accounts/new")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html and 'id="host_url-error"' in html
    assert env.accounts("alice") == []


def test_create_when_host_url_acceptable_stores_its_rebuilt_form(env: WebEnv, alice: FlaskClient) -> None:
    with fake_openalgo(KEY) as host:
        port = host.rsplit(":", 1)[1]
        response = post_form(
            alice, "/accounts/new", form("Main", f"HTTP://LocalHost:0{port}/"), page="/accounts/new"
        )
    assert response.status_code == 303
    account = env.accounts("alice")[0]
    assert account.host_url == f"http://localhost:{port}"
    assert account.connection_status == "connected"


# ---------------------------------------------------------------------- finding 2: allow-list


def test_allow_list_when_host_not_listed_refuses_save_and_every_test_without_calling(
    env: WebEnv, alice: FlaskClient
) -> None:
    with recording_server() as server:
        created = post_form(alice, "/accounts/new", form("Main", server.url), page="/accounts/new")
        assert created.status_code == 303
        account = env.accounts("alice")[0]
        before = len(server.requests)
        set_policy(env, HostPolicy.parse("openalgo.example.com", allow_loopback=False))

        new = post_form(alice, "/accounts/new", form("Second", server.url), page="/accounts/new")
        new_test = post_form(alice, "/accounts/new/test", form("Second", server.url), page="/accounts/new")
        edit_test = post_form(
            alice, f"/accounts/{account.id}/edit/test", form("Main", server.url), page="/accounts/"
        )
        saved_test = post_form(
            alice, f"/accounts/{account.id}/test", page="/accounts/", follow_redirects=True
        )
        assert len(server.requests) == before
    for response in (new, new_test, edit_test):
        assert response.status_code == 400
        assert "not on the administrator&#39;s list of allowed account hosts" in response.get_data(
            as_text=True
        )
    assert "not on the administrator&#39;s list" in saved_test.get_data(as_text=True)
    assert [a.account_name for a in env.accounts("alice")] == ["Main"]


def test_allow_list_when_restricted_keeps_loopback_allowed_by_default(
    env: WebEnv, alice: FlaskClient
) -> None:
    set_policy(env, HostPolicy.parse("openalgo.example.com"))
    with fake_openalgo(KEY) as host:
        response = post_form(alice, "/accounts/new", form("Main", host), page="/accounts/new")
    assert response.status_code == 303
    assert env.accounts("alice")[0].connection_status == "connected"


def test_admin_page_when_allow_list_saved_stores_it_and_shows_it(env: WebEnv, admin: FlaskClient) -> None:
    page = admin.get("/admin/").get_data(as_text=True)
    assert "Account hosts" in page and "Accounts may use <strong>any host</strong>" in page
    data = {
        "restricted": "y",
        "allow_loopback": "y",
        "entries": "OpenAlgo.Example.com\n10.0.0.0/8, [fd00::1]",
    }
    response = post_form(admin, "/admin/account-hosts", data, page="/admin/", follow_redirects=True)
    assert response.status_code == 200 and "only the allowed hosts" in response.get_data(as_text=True)
    with env.database.session() as s:
        policy = load_host_policy(s)
    assert policy.restricted and policy.allow_loopback
    assert policy.entries == ("openalgo.example.com", "10.0.0.0/8", "fd00::1")
    assert "openalgo.example.com\n10.0.0.0/8\nfd00::1" in admin.get("/admin/").get_data(as_text=True)
    assert "settings_changed" in env.actions("root")
    # Unticking the switch opens it again.
    post_form(admin, "/admin/account-hosts", {"entries": "10.0.0.0/8"}, page="/admin/")
    with env.database.session() as s:
        assert not load_host_policy(s).restricted


def test_admin_page_when_entry_unreadable_refuses_with_message_and_keeps_setting(
    env: WebEnv, admin: FlaskClient
) -> None:
    data = {"restricted": "y", "entries": "good.example.com *.example.com bad/name"}
    response = post_form(admin, "/admin/account-hosts", data, page="/admin/")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "not a host name, IP address or CIDR range" in html and "*.example.com" in html
    with env.database.session() as s:
        assert not load_host_policy(s).restricted


def test_admin_account_hosts_when_user_not_admin_gives_403(env: WebEnv, alice: FlaskClient) -> None:
    data = {"restricted": "y", "entries": ""}
    assert post_form(alice, "/admin/account-hosts", data, page="/accounts/").status_code == 403
    with env.database.session() as s:
        assert not load_host_policy(s).restricted


# ----------------------------------------------------------------- finding 4: the stored key


def test_edit_test_when_key_empty_and_host_changed_requires_key_and_sends_nothing(
    env: WebEnv, alice: FlaskClient
) -> None:
    with fake_openalgo(KEY) as saved_host, recording_server() as attacker:
        post_form(alice, "/accounts/new", form("Main", saved_host), page="/accounts/new")
        account = env.accounts("alice")[0]
        elsewhere = form("Main", attacker.url, api_key="")
        tested = post_form(alice, f"/accounts/{account.id}/edit/test", elsewhere, page="/accounts/")
        moved = post_form(alice, f"/accounts/{account.id}/edit", elsewhere, page="/accounts/")
        assert attacker.requests == []  # the stored key went nowhere
        for response in (tested, moved):
            assert response.status_code == 400
            html = response.get_data(as_text=True)
            assert "Enter the API key again to use another host" in html and 'id="api_key-error"' in html
        assert env.accounts("alice")[0].host_url == saved_host
        # The saved host still gets the stored key, and a typed key goes where the user says.
        same = post_form(
            alice,
            f"/accounts/{account.id}/edit/test",
            form("Main", saved_host, api_key=""),
            page="/accounts/",
        )
        assert same.status_code == 200 and "Connected to zerodha" in same.get_data(as_text=True)
        typed = form("Main", attacker.url, api_key=OTHER_KEY)
        assert (
            post_form(alice, f"/accounts/{account.id}/edit/test", typed, page="/accounts/").status_code == 200
        )
        assert attacker.keys == [OTHER_KEY, OTHER_KEY]  # ping then funds, with the typed key only
        assert KEY not in attacker.keys


def test_edit_when_only_websocket_url_changed_and_key_empty_requires_key(
    env: WebEnv, alice: FlaskClient
) -> None:
    with fake_openalgo(KEY) as saved_host:
        post_form(alice, "/accounts/new", form("Main", saved_host), page="/accounts/new")
        account = env.accounts("alice")[0]
        elsewhere = form("Main", saved_host, api_key="", websocket_url="ws://203.0.113.5:8765")

        response = post_form(alice, f"/accounts/{account.id}/edit", elsewhere, page="/accounts/")

        assert response.status_code == 400
        assert "Enter the API key again" in response.get_data(as_text=True)
        assert env.accounts("alice")[0].websocket_url == account.websocket_url
