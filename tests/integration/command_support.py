"""Helpers for the web-command tests: a signed-in web app with one paper-exchange account and a resting
order, the cancel form posted like a browser, and a CommandProcessor on the same database."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from flask.testing import FlaskClient
from sqlalchemy import select

from algomirror.broker.client import OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import ActivityLog, EngineCommand, Order
from algomirror.engine.commands import CommandConfig, CommandProcessor
from algomirror.engine.factory import make_decryptor
from tests.factories import make_account, make_order
from tests.integration.web_support import WebEnv, csrf_token, make_env, signed_in
from tests.sim_fixtures import SimHandle

PE = "NIFTY01DEC2626000PE"
COMMAND_TOKEN_RE = re.compile(r'name="command_token" value="([^"]+)"')


class CountingRegistry(ClientRegistry):
    """The real engine-wide registry, recording which accounts a client was asked for."""

    def __init__(self) -> None:
        super().__init__(timeouts=Timeouts(connect=2.0, read=5.0, order=5.0), retry=RetryPolicy(attempts=1))
        self.made: list[tuple[int, str]] = []

    def client(self, account_id: int, host_url: str, api_key: str, *, name: str = "") -> OpenAlgoClient:
        self.made.append((account_id, host_url))
        return super().client(account_id, host_url, api_key, name=name)


def place(sim: SimHandle, key_index: int = 0, **order: Any) -> str:
    """Place an order on the paper exchange directly (as the broker's own terminal would)."""
    body = {
        "apikey": sim.api_keys[key_index],
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


def exchange_order(sim: SimHandle, orderid: str, key_index: int = 0) -> dict[str, Any]:
    reply = httpx.post(
        sim.api_url + "/orderstatus",
        json={"apikey": sim.api_keys[key_index], "orderid": orderid, "strategy": "test"},
        timeout=10,
    )
    data: dict[str, Any] = reply.json()["data"]
    return data


@dataclass
class CancelSetup:
    env: WebEnv
    client: FlaskClient
    order_pk: int
    account_id: int
    orderid: str


def cancel_setup(
    db_url: str, tmp_path: Path, sim: SimHandle, orderid: str, *, user: str = "alice", **env: Any
) -> CancelSetup:
    """A web app, ``user`` signed in, one account on the paper exchange and our copy of ``orderid`` as
    the engine's sync writes a resting order (status ``open``)."""
    web = make_env(db_url, tmp_path, **env)
    client = signed_in(web, user)
    uid = web.user(user).id
    with web.database.session() as s:
        account = make_account(
            s,
            uid,
            "Paper one",
            is_primary=True,
            host_url=sim.rest_url,
            api_key_encrypted=web.state.box.encrypt(sim.api_keys[0]),
        )
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
        return CancelSetup(web, client, order.id, account.id, orderid)


def cancel_form(client: FlaskClient, order_pk: int) -> dict[str, str]:
    """The confirmation page's form fields (CSRF token and the command's idempotency token)."""
    page = client.get(f"/orders/{order_pk}/cancel").get_data(as_text=True)
    match = COMMAND_TOKEN_RE.search(page)
    assert match, "the confirmation page has no command token"
    return {"csrf_token": csrf_token(client, f"/orders/{order_pk}/cancel"), "command_token": match.group(1)}


def request_cancel(setup: CancelSetup) -> Any:
    return setup.client.post(
        f"/orders/{setup.order_pk}/cancel", data=cancel_form(setup.client, setup.order_pk)
    )


def cancel_requested(db_url: str, tmp_path: Path, sim: SimHandle, **env: Any) -> CancelSetup:
    """A resting LIMIT order at the paper exchange, our copy of it, and its cancel requested through the
    web (one pending ``cancel_order`` command): where most command tests start."""
    orderid = place(sim, pricetype="LIMIT", price="5")
    setup = cancel_setup(db_url, tmp_path, sim, orderid, **env)
    assert request_cancel(setup).status_code == 303
    return setup


def commands(env: WebEnv) -> list[EngineCommand]:
    with env.database.session_factory() as s:
        return list(s.scalars(select(EngineCommand).order_by(EngineCommand.id)))


def order_row(env: WebEnv, order_pk: int) -> Order:
    with env.database.session_factory() as s:
        row = s.get(Order, order_pk)
        assert row is not None
        return row


def cancel_actions(env: WebEnv) -> list[tuple[str, str | None]]:
    with env.database.session_factory() as s:
        rows = s.execute(
            select(ActivityLog.action, ActivityLog.details)
            .where(ActivityLog.action.like("order_cancel%"))
            .order_by(ActivityLog.id)
        ).all()
        return [(r[0], r[1]) for r in rows]


@asynccontextmanager
async def processor(env: WebEnv, **config: Any) -> AsyncIterator[CommandProcessor]:
    """A CommandProcessor on the web app's database, with the engine's decryptor for its settings."""
    registry = CountingRegistry()
    settings: dict[str, Any] = {
        "poll_seconds": 0.05,
        "retry_delay": 0.0,
        "confirm_seconds": 0.5,
        "confirm_interval": 0.05,
        **config,
    }
    try:
        yield CommandProcessor(
            env.database,
            registry,
            make_decryptor(env.state.settings),
            clock=env.clock,
            config=CommandConfig(**settings),
        )
    finally:
        await registry.aclose()
