"""Cancel from the Orders page against the real paper exchange: confirm page, CSRF POST, the exchange's
book, the activity log, and the broker's refusal shown on the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from algomirror.db.models import ActivityLog, Order
from tests.factories import make_account, make_order
from tests.integration.web_support import WebEnv, csrf_token, make_env, signed_in
from tests.sim_fixtures import SimHandle

PE = "NIFTY01DEC2626000PE"


def _place(sim: SimHandle, **order: Any) -> str:
    body = {
        "apikey": sim.api_keys[0],
        "strategy": "test",
        "symbol": PE,
        "exchange": "NFO",
        "action": "BUY",
        "product": "NRML",
        "quantity": "65",
        **order,
    }
    reply = httpx.post(sim.api_url + "/placeorder", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["orderid"])


def _exchange_status(sim: SimHandle, orderid: str) -> str:
    reply = httpx.post(
        sim.api_url + "/orderstatus",
        json={"apikey": sim.api_keys[0], "orderid": orderid, "strategy": "test"},
        timeout=10,
    )
    return str(reply.json()["data"]["order_status"])


def _setup(db_url: str, tmp_path: Path, sim: SimHandle, orderid: str) -> tuple[WebEnv, Any, int]:
    env = make_env(db_url, tmp_path)
    client = signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session() as s:
        account = make_account(
            s,
            uid,
            "Paper one",
            is_primary=True,
            host_url=sim.rest_url,
            api_key_encrypted=env.state.box.encrypt(sim.api_keys[0]),
        )
        # What the engine's sync writes for a resting order (our copy says "open").
        order = make_order(
            s,
            account.id,
            orderid,
            symbol=PE,
            action="BUY",
            quantity=65,
            status="open",
            order_type="LIMIT",
            price="5",
        )
        pk = order.id
    return env, client, pk


def _actions(env: WebEnv) -> list[tuple[str, str | None]]:
    with env.database.session_factory() as s:
        rows = s.execute(
            select(ActivityLog.action, ActivityLog.details)
            .where(ActivityLog.action.like("order_cancel%"))
            .order_by(ActivityLog.id)
        ).all()
        return [(r[0], r[1]) for r in rows]


def test_cancel_when_order_rests_on_exchange_cancels_it_and_logs(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    orderid = _place(sim, pricetype="LIMIT", price="5")
    assert _exchange_status(sim, orderid) == "open"
    env, client, pk = _setup(db_url, tmp_path, sim, orderid)

    listing = client.get("/orders").get_data(as_text=True)
    assert f"/orders/{pk}/cancel" in listing
    confirm = client.get(f"/orders/{pk}/cancel")
    assert confirm.status_code == 200
    assert "Yes, cancel this order" in confirm.get_data(as_text=True)
    assert _exchange_status(sim, orderid) == "open", "the confirm page must not cancel anything"

    token = csrf_token(client, f"/orders/{pk}/cancel")
    done = client.post(f"/orders/{pk}/cancel", data={"csrf_token": token, "back": "//evil.example/x"})
    assert done.status_code == 303
    assert done.headers["Location"].endswith("/orders")  # an off-site "back" is ignored
    assert _exchange_status(sim, orderid) == "cancelled"
    assert [a for a, _ in _actions(env)] == ["order_cancel_requested", "order_cancelled"]
    assert all(orderid in (d or "") for _, d in _actions(env))
    with env.database.session_factory() as s:
        assert s.get(Order, pk).status == "cancelled"  # type: ignore[union-attr]
    page = client.get("/orders").get_data(as_text=True)
    assert f"Cancel sent for order {orderid}" in page


def test_cancel_when_order_already_complete_shows_broker_message(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    orderid = _place(sim, pricetype="MARKET")
    assert _exchange_status(sim, orderid) == "complete"
    env, client, pk = _setup(db_url, tmp_path, sim, orderid)  # our copy is stale: still "open"

    token = csrf_token(client, f"/orders/{pk}/cancel")
    refused = client.post(f"/orders/{pk}/cancel", data={"csrf_token": token})
    assert refused.status_code == 409
    text = refused.get_data(as_text=True)
    assert "Cannot cancel order in complete status" in text
    assert [a for a, _ in _actions(env)] == ["order_cancel_requested", "order_cancel_failed"]
    assert "Cannot cancel order in complete status" in (_actions(env)[1][1] or "")


def test_cancel_when_post_without_csrf_token_is_refused(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    orderid = _place(sim, pricetype="LIMIT", price="5")
    env, client, pk = _setup(db_url, tmp_path, sim, orderid)
    response = client.post(f"/orders/{pk}/cancel", data={})
    assert response.status_code == 400
    assert _exchange_status(sim, orderid) == "open"
    assert _actions(env) == []


def test_cancel_when_order_not_open_in_our_book_offers_no_button(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    env, client, _ = _setup(db_url, tmp_path, sim, "nope-1")
    with env.database.session() as s:
        done = make_order(s, env.accounts("alice")[0].id, "done-1", status="complete")
        pk = done.id
    page = client.get(f"/orders/{pk}/cancel").get_data(as_text=True)
    assert "Yes, cancel this order" not in page and "nothing to cancel" in page
    token = csrf_token(client, f"/orders/{pk}/cancel")
    response = client.post(f"/orders/{pk}/cancel", data={"csrf_token": token})
    assert response.status_code == 303
    assert _actions(env) == []


def test_cancel_when_broker_limit_exceeded_answers_429(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    env = make_env(db_url, tmp_path, ratelimit_broker="2 per minute")
    client = signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session() as s:
        account = make_account(
            s,
            uid,
            "Paper one",
            is_primary=True,
            host_url=sim.rest_url,
            api_key_encrypted=env.state.box.encrypt(sim.api_keys[0]),
        )
        pks = [make_order(s, account.id, f"gone-{i}", status="open").id for i in range(3)]
    token = csrf_token(client, f"/orders/{pks[0]}/cancel")
    codes = [client.post(f"/orders/{pk}/cancel", data={"csrf_token": token}).status_code for pk in pks]
    assert codes[:2] == [409, 409]  # unknown ids: the broker's 404 is shown
    assert codes[2] == 429
