"""Rupee amounts on every page use Indian digit grouping (one formatter), including the texts that the
connection test writes into the activity log and the account's connection history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.web_support import WebEnv, fake_openalgo, make_env, post_form, signed_in

KEY = "alpha-key-0001-WXYZ"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


def test_connection_test_when_cash_is_a_lakh_or_more_history_and_activity_use_indian_grouping(
    env: WebEnv,
) -> None:
    alice = signed_in(env, "alice")
    with fake_openalgo(KEY) as host:  # reports available cash 123456.50
        response = post_form(
            alice,
            "/accounts/new",
            {
                "account_name": "Main",
                "broker": "zerodha",
                "host_url": host,
                "websocket_url": "ws://127.0.0.1:8765",
                "api_key": KEY,
            },
            page="/accounts/new",
        )
    assert response.status_code == 303
    account = env.accounts("alice")[0]
    for page in (f"/accounts/{account.id}", "/activity/"):
        html = alice.get(page).get_data(as_text=True)
        assert "₹1,23,456.50" in html, page
        assert "₹123,456.50" not in html, page
