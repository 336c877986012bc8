"""Authorization on every dashboard/book page, fragment and export: user B never sees user A's rows,
and A's ids in B's URLs answer 404."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.factories import make_account, make_funds, make_holding, make_order, make_position, make_trade
from tests.integration.web_support import WebEnv, csrf_token, make_env, signed_in

SECRET_MARKS = ("ALICEACCT", "ALICESYM", "ALICE-ORD", "777777.77")
BOOK_PATHS = ["/positions", "/orders", "/trades", "/holdings", "/funds"]
ALL_PATHS = [
    "/",
    "/dashboard/live",
    *BOOK_PATHS,
    *[p + "/live" for p in BOOK_PATHS],
    *[p + ".csv" for p in BOOK_PATHS],
]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


@pytest.fixture
def alice_rows(env: WebEnv) -> dict[str, int]:
    signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session() as s:
        a = make_account(s, uid, "ALICEACCT", is_primary=True)
        make_funds(s, a.id, available_cash=Decimal("777777.77"))
        make_position(s, a.id, "ALICESYM1", pnl=Decimal("777777.77"))
        order = make_order(s, a.id, "ALICE-ORD-1", symbol="ALICESYM1", status="open")
        make_trade(s, a.id, "ALICE-ORD-1", symbol="ALICESYM1", trade_value=Decimal("777777.77"))
        make_holding(s, a.id, "ALICESYM2", current_value=Decimal("777777.77"))
        return {"account": a.id, "order": order.id}


@pytest.fixture
def bob(env: WebEnv, alice_rows: dict[str, int]):  # type: ignore[no-untyped-def]
    client = signed_in(env, "bob")
    uid = env.user("bob").id
    with env.database.session() as s:
        b = make_account(s, uid, "Bob main", is_primary=True)
        make_funds(s, b.id, available_cash=Decimal("10.00"))
        make_position(s, b.id, "BOBSYM", pnl=Decimal("1.00"))
        make_order(s, b.id, "BOB-ORD-1", symbol="BOBSYM", status="open")
    return client


def test_views_when_other_user_has_rows_never_shows_them(bob, alice_rows: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    for path in ALL_PATHS:
        response = bob.get(path)
        assert response.status_code == 200, path
        body = response.get_data(as_text=True)
        for mark in SECRET_MARKS:
            assert mark not in body, (path, mark)
        assert "BOBSYM" in body or "Bob main" in body or path.startswith(("/holdings", "/trades")), path


def test_views_when_filter_names_other_users_account_is_404(bob, alice_rows: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    for path in ALL_PATHS[2:]:
        assert bob.get(f"{path}?account={alice_rows['account']}").status_code == 404, path
        assert bob.get(f"{path}?account=999999").status_code == 404, path


def test_overview_when_account_is_other_users_is_404(bob, alice_rows: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    assert bob.get(f"/accounts/{alice_rows['account']}/overview").status_code == 404
    assert bob.get(f"/accounts/{alice_rows['account']}/overview/live").status_code == 404
    assert bob.get("/accounts/999999/overview").status_code == 404


def test_cancel_when_order_is_other_users_is_404_and_nothing_logged(
    env: WebEnv,
    bob,
    alice_rows: dict[str, int],  # type: ignore[no-untyped-def]
) -> None:
    assert bob.get(f"/orders/{alice_rows['order']}/cancel").status_code == 404
    token = csrf_token(bob, "/orders")
    assert bob.post(f"/orders/{alice_rows['order']}/cancel", data={"csrf_token": token}).status_code == 404
    assert not [a for a in env.actions() if a.startswith("order_cancel")]


def test_views_when_signed_out_redirect_to_login(env: WebEnv, alice_rows: dict[str, int]) -> None:
    client = env.client()
    for path in [
        *ALL_PATHS[1:],
        f"/accounts/{alice_rows['account']}/overview",
        f"/orders/{alice_rows['order']}/cancel",
    ]:
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path


def test_live_fragments_when_session_ended_tell_htmx_to_go_to_login(
    env: WebEnv, alice_rows: dict[str, int]
) -> None:
    client = env.client()
    for path in ("/dashboard/live", "/positions/live", f"/accounts/{alice_rows['account']}/overview/live"):
        response = client.get(path, headers={"HX-Request": "true"})
        assert response.status_code == 401, path
        assert response.headers["HX-Redirect"] == "/login"
