"""Cancel from the Orders page: the confirm page, the CSRF POST that queues an engine command (never a
broker call from the web), the request shown until the engine ends it, and the outcome afterwards.
Against the real paper exchange, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import update

from algomirror.db.models import EngineCommand
from tests.factories import make_order
from tests.integration.command_support import (
    cancel_actions,
    cancel_form,
    cancel_setup,
    commands,
    exchange_order,
    order_row,
    place,
    processor,
    request_cancel,
)
from tests.integration.web_support import csrf_token, signed_in
from tests.sim_fixtures import SimHandle


async def test_cancel_when_confirmed_queues_command_and_leaves_order_to_the_broker(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    orderid = place(sim, pricetype="LIMIT", price="5")
    setup = cancel_setup(db_url, tmp_path, sim, orderid)
    client, pk = setup.client, setup.order_pk

    assert f"/orders/{pk}/cancel" in client.get("/orders").get_data(as_text=True)
    confirm = client.get(f"/orders/{pk}/cancel").get_data(as_text=True)
    assert "Yes, cancel this order" in confirm
    assert commands(setup.env) == [], "the confirm page must not request anything"

    form = cancel_form(client, pk)
    done = client.post(f"/orders/{pk}/cancel", data={**form, "back": "//evil.example/x"})
    assert done.status_code == 303
    assert done.headers["Location"].endswith(f"/orders/{pk}/cancel?back=/orders")  # off-site back ignored
    [command] = commands(setup.env)
    assert (command.kind, command.status, command.token) == ("cancel_order", "pending", form["command_token"])
    assert command.payload == {"account_id": setup.account_id, "order_id": orderid, "order_pk": pk}
    assert command.created_at == setup.env.clock.now()
    # Nothing reached the broker and our copy is unchanged: only the broker's word changes it.
    assert exchange_order(sim, orderid)["order_status"] == "open"
    assert order_row(setup.env, pk).status == "open"
    assert [a for a, _ in cancel_actions(setup.env)] == ["order_cancel_requested"]
    assert orderid in (cancel_actions(setup.env)[0][1] or "")

    page = client.get(done.headers["Location"]).get_data(as_text=True)
    assert f"Cancel requested for order {orderid}" in page
    assert "status changes when the broker confirms" in page
    assert "waiting for the engine" in page
    assert "Yes, cancel this order" not in page  # no second request while one is pending
    listing = client.get("/orders/live").get_data(as_text=True)
    assert "cancel requested" in listing and f'aria-label="Cancel order {orderid}"' not in listing
    overview = client.get(f"/accounts/{setup.account_id}/overview").get_data(as_text=True)
    assert "cancel requested" in overview

    async with processor(setup.env) as engine:
        assert await engine.process_once() == 1
    assert exchange_order(sim, orderid)["order_status"] == "cancelled"
    assert order_row(setup.env, pk).status == "cancelled"
    page = client.get(f"/orders/{pk}/cancel").get_data(as_text=True)
    assert "Cancel request finished" in page and "The broker reports the order <strong>cancelled" in page
    assert "cancel requested" not in client.get("/orders/live").get_data(as_text=True)
    assert [a for a, _ in cancel_actions(setup.env)] == ["order_cancel_requested", "order_cancelled"]


def test_cancel_when_same_form_submitted_twice_is_one_command(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_setup(db_url, tmp_path, sim, place(sim, pricetype="LIMIT", price="5"))
    form = cancel_form(setup.client, setup.order_pk)
    first = setup.client.post(f"/orders/{setup.order_pk}/cancel", data=form)
    second = setup.client.post(f"/orders/{setup.order_pk}/cancel", data=form)
    assert (first.status_code, second.status_code) == (303, 303)
    assert "already requested" in setup.client.get(second.headers["Location"]).get_data(as_text=True)
    assert len(commands(setup.env)) == 1
    # The command ended (failed) and the order is still open: the old form is still the same command.
    with setup.env.database.session() as s:
        s.execute(update(EngineCommand).values(status="failed", error="test"))
    third = setup.client.post(f"/orders/{setup.order_pk}/cancel", data=form)
    assert third.status_code == 303
    assert len(commands(setup.env)) == 1
    assert [a for a, _ in cancel_actions(setup.env)] == ["order_cancel_requested"]
    # A fresh confirmation is a new request.
    assert request_cancel(setup).status_code == 303
    assert len(commands(setup.env)) == 2


def test_cancel_when_two_submits_race_one_command_and_no_error(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_setup(db_url, tmp_path, sim, place(sim, pricetype="LIMIT", price="5"))
    form = cancel_form(setup.client, setup.order_pk)
    name = setup.env.app.config["SESSION_COOKIE_NAME"]
    cookie = setup.client.get_cookie(name)
    assert cookie is not None
    clients = [setup.env.client() for _ in range(4)]
    for c in clients:
        c.set_cookie(name, cookie.value)
    barrier = threading.Barrier(len(clients))
    codes: list[int] = []

    def post(c: object) -> None:
        barrier.wait()
        codes.append(c.post(f"/orders/{setup.order_pk}/cancel", data=form).status_code)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes) == [303] * len(clients)
    assert len(commands(setup.env)) == 1


def test_cancel_when_post_without_csrf_token_is_refused(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_setup(db_url, tmp_path, sim, place(sim, pricetype="LIMIT", price="5"))
    form = cancel_form(setup.client, setup.order_pk)
    response = setup.client.post(
        f"/orders/{setup.order_pk}/cancel", data={"command_token": form["command_token"]}
    )
    assert response.status_code == 400
    assert commands(setup.env) == [] and cancel_actions(setup.env) == []


def test_cancel_when_post_without_command_token_is_refused(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_setup(db_url, tmp_path, sim, place(sim, pricetype="LIMIT", price="5"))
    token = csrf_token(setup.client, f"/orders/{setup.order_pk}/cancel")
    response = setup.client.post(f"/orders/{setup.order_pk}/cancel", data={"csrf_token": token})
    assert response.status_code == 400
    assert "confirm the cancel again" in response.get_data(as_text=True)
    assert commands(setup.env) == [] and cancel_actions(setup.env) == []


def test_cancel_when_order_is_other_users_is_404_and_nothing_queued(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_setup(db_url, tmp_path, sim, place(sim, pricetype="LIMIT", price="5"))
    form = cancel_form(setup.client, setup.order_pk)
    bob = signed_in(setup.env, "bob")
    assert bob.get(f"/orders/{setup.order_pk}/cancel").status_code == 404
    data = {"csrf_token": csrf_token(bob, "/orders"), "command_token": form["command_token"]}
    assert bob.post(f"/orders/{setup.order_pk}/cancel", data=data).status_code == 404
    assert commands(setup.env) == [] and cancel_actions(setup.env) == []


def test_cancel_when_order_not_open_in_our_book_offers_no_button(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_setup(db_url, tmp_path, sim, "nope-1")
    with setup.env.database.session() as s:
        pk = make_order(s, setup.account_id, "done-1", status="complete").id
    page = setup.client.get(f"/orders/{pk}/cancel").get_data(as_text=True)
    assert "Yes, cancel this order" not in page and "nothing to cancel" in page
    data = {**cancel_form(setup.client, setup.order_pk), "csrf_token": csrf_token(setup.client, "/orders")}
    response = setup.client.post(f"/orders/{pk}/cancel", data=data)
    assert response.status_code == 303
    assert commands(setup.env) == [] and cancel_actions(setup.env) == []


def test_cancel_when_limit_exceeded_answers_429(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_setup(db_url, tmp_path, sim, "gone-0", ratelimit_broker="2 per minute")
    with setup.env.database.session() as s:
        pks = [setup.order_pk] + [
            make_order(s, setup.account_id, f"gone-{i}", status="open").id for i in (1, 2)
        ]
    forms = [cancel_form(setup.client, pk) for pk in pks]
    codes = [
        setup.client.post(f"/orders/{pk}/cancel", data=form).status_code
        for pk, form in zip(pks, forms, strict=True)
    ]
    assert codes == [303, 303, 429]
    assert len(commands(setup.env)) == 2
