"""The engine's CommandProcessor running web-requested cancels against the paper exchange, on SQLite and
PostgreSQL: the order row changes only on the broker's word (orderstatus), never on the cancel's
acknowledgement; one claim wins; retryable, refused and halting failures end where they should."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, update

from algomirror.broker.client import Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.broker.transport import HostPool, Reply
from algomirror.broker.wire import BrokerOrder
from algomirror.broker.wire.terms import OrderState
from algomirror.db.models import EngineCommand, User
from algomirror.engine.book_mirror import store_orders
from algomirror.engine.commands import CommandConfig, CommandProcessor
from algomirror.engine.factory import build_engine, make_decryptor
from tests.factories import make_account, make_order
from tests.helpers import eventually_async
from tests.integration.command_support import (
    CancelSetup,
    CountingRegistry,
    cancel_actions,
    cancel_requested,
    cancel_setup,
    commands,
    exchange_order,
    order_row,
    place,
    processor,
    request_cancel,
)
from tests.integration.web_support import WebEnv
from tests.sim_fixtures import SimHandle


@contextmanager
def order_writes(env: WebEnv) -> Iterator[list[str]]:
    """Every INSERT/UPDATE statement on ``orders`` with its parameters, as text."""
    seen: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        head = " ".join(statement.split()[:3]).upper()
        if head.startswith(("UPDATE ORDERS", "INSERT INTO ORDERS")):
            seen.append(f"{statement} {parameters!r}")

    event.listen(env.database.engine, "before_cursor_execute", spy)
    try:
        yield seen
    finally:
        event.remove(env.database.engine, "before_cursor_execute", spy)


async def run_until_ended(engine: CommandProcessor, env: WebEnv, count: int = 1) -> list[EngineCommand]:
    """Run the processor's real loop until ``count`` commands are done or failed; then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))

    async def ended() -> list[EngineCommand]:
        rows = [c for c in commands(env) if c.status in ("done", "failed")]
        return rows if len(rows) >= count else []

    try:
        return await eventually_async(ended, timeout=20, what="commands ended")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_cancel_when_order_fills_before_broker_confirms_ends_complete(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_requested(db_url, tmp_path, sim)
    orderid = setup.orderid
    # The broker acknowledges the cancel while the exchange fills the order instead.
    sim.control.cancel_fill(1, apikey=sim.api_keys[0])

    with order_writes(setup.env) as writes:
        async with processor(setup.env) as engine:
            [command] = await run_until_ended(engine, setup.env)

    assert exchange_order(sim, orderid)["order_status"] == "complete"
    row = order_row(setup.env, setup.order_pk)
    assert (row.status, row.filled_quantity, row.pending_quantity) == ("complete", 65, 0)
    assert row.average_price == Decimal("5")
    assert command.status == "done" and command.error is None
    assert command.result is not None
    assert (command.result["cancel"], command.result["broker_status"]) == ("acknowledged", "complete")
    assert command.result["filled_quantity"] == 65
    assert writes and not [w for w in writes if "cancelled" in w], writes
    actions = cancel_actions(setup.env)
    assert [a for a, _ in actions] == ["order_cancel_requested", "order_cancel_failed"]
    assert "complete" in (actions[1][1] or "")
    page = setup.client.get(f"/orders/{setup.order_pk}/cancel").get_data(as_text=True)
    assert "It filled before the cancel took effect" in page and "nothing to cancel" in page


async def test_cancel_when_broker_cancels_ends_cancelled_from_orderstatus(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_requested(db_url, tmp_path, sim)
    orderid = setup.orderid
    setup.env.clock.advance(timedelta(seconds=7))

    async with processor(setup.env) as engine:
        [command] = await run_until_ended(engine, setup.env)

    assert exchange_order(sim, orderid)["order_status"] == "cancelled"
    row = order_row(setup.env, setup.order_pk)
    assert (row.status, row.filled_quantity, row.pending_quantity) == ("cancelled", 0, 0)
    assert row.updated_at == setup.env.clock.now()
    assert command.status == "done"
    assert command.result is not None and command.result["broker_status"] == "cancelled"
    assert command.started_at == command.finished_at == setup.env.clock.now()  # the injected clock
    assert [a for a, _ in cancel_actions(setup.env)] == ["order_cancel_requested", "order_cancelled"]


async def test_cancel_when_orderstatus_unreadable_leaves_row_for_sync(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_requested(db_url, tmp_path, sim)
    orderid = setup.orderid
    sim.control.status_next(500, 5, endpoint="orderstatus", apikey=sim.api_keys[0])

    with order_writes(setup.env) as writes:
        async with processor(setup.env) as engine:
            assert await engine.process_once() == 1

    sim.control.clear_faults()
    assert exchange_order(sim, orderid)["order_status"] == "cancelled"
    # Acknowledged, but the broker's state could not be read: our row waits for the sync.
    assert order_row(setup.env, setup.order_pk).status == "open"
    assert writes == []
    [command] = commands(setup.env)
    assert command.status == "done" and command.result is not None
    assert command.result["cancel"] == "acknowledged" and "broker_status" not in command.result
    assert "next sync" in command.result["note"]


async def test_cancel_when_order_already_complete_ends_done_with_broker_state(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    orderid = place(sim, pricetype="MARKET")
    assert exchange_order(sim, orderid)["order_status"] == "complete"
    setup = cancel_setup(db_url, tmp_path, sim, orderid)  # our copy is stale: still "open"
    assert request_cancel(setup).status_code == 303

    async with processor(setup.env) as engine:
        assert await engine.process_once() == 1

    [command] = commands(setup.env)
    assert command.status == "done" and command.result is not None
    assert command.result["cancel"] == "refused"
    assert command.result["cancel_message"] == "Cannot cancel order in complete status"
    assert command.result["broker_status"] == "complete"
    row = order_row(setup.env, setup.order_pk)
    assert (row.status, row.filled_quantity) == ("complete", 65)
    page = setup.client.get(f"/orders/{setup.order_pk}/cancel").get_data(as_text=True)
    assert "The broker reports the order <strong>complete" in page


async def test_cancel_when_broker_does_not_know_the_order_fails_with_its_message(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_setup(db_url, tmp_path, sim, "99999")
    assert request_cancel(setup).status_code == 303

    async with processor(setup.env) as engine:
        assert await engine.process_once() == 1

    [command] = commands(setup.env)
    assert (command.status, command.error) == ("failed", "Order 99999 not found")
    assert order_row(setup.env, setup.order_pk).status == "open"
    page = setup.client.get(f"/orders/{setup.order_pk}/cancel").get_data(as_text=True)
    assert "Cancel request failed" in page and "Order 99999 not found" in page
    assert "Yes, cancel this order" in page  # the order is still open for us: it may be tried again


async def test_run_when_two_processors_race_each_command_runs_once(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    orderids = [place(sim, pricetype="LIMIT", price="5") for _ in range(6)]
    setup = cancel_setup(db_url, tmp_path, sim, orderids[0])
    with setup.env.database.session() as s:
        pks = [setup.order_pk]
        pks += [make_order(s, setup.account_id, o, status="open", quantity=65).id for o in orderids[1:]]
    for pk in pks:
        setup.order_pk = pk
        assert request_cancel(setup).status_code == 303

    async with processor(setup.env) as first, processor(setup.env) as second:
        ran = await asyncio.gather(first.process_once(), second.process_once())
        assert sum(ran) == len(pks)
        assert isinstance(first.registry, CountingRegistry) and isinstance(second.registry, CountingRegistry)
        calls = len(first.registry.made) + len(second.registry.made)
    assert calls == len(pks)  # one broker client lookup (one cancel) per command
    assert [c.status for c in commands(setup.env)] == ["done"] * len(pks)
    assert [a for a, _ in cancel_actions(setup.env)].count("order_cancelled") == len(pks)
    assert all(exchange_order(sim, o)["order_status"] == "cancelled" for o in orderids)


async def test_cancel_when_rate_limited_retries_then_succeeds(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_requested(db_url, tmp_path, sim)
    sim.control.rate_limit_next(2, endpoint="cancelorder", apikey=sim.api_keys[0])

    async with processor(setup.env) as engine:
        assert await engine.process_once() == 1
        [command] = commands(setup.env)
        assert (command.status, command.result) == ("pending", {"attempts": 1})
        assert "cancel not sent" in (command.error or "")
        assert order_row(setup.env, setup.order_pk).status == "open"
        page = setup.client.get(f"/orders/{setup.order_pk}/cancel").get_data(as_text=True)
        assert "waiting for the engine" in page
        [command] = await run_until_ended(engine, setup.env)
    assert command.status == "done" and command.result is not None
    assert command.result["broker_status"] == "cancelled"
    assert order_row(setup.env, setup.order_pk).status == "cancelled"


async def test_cancel_when_retries_exhausted_fails(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_requested(db_url, tmp_path, sim)
    orderid = setup.orderid
    sim.control.rate_limit_next(10, endpoint="cancelorder", apikey=sim.api_keys[0])

    async with processor(setup.env, max_attempts=2) as engine:
        [command] = await run_until_ended(engine, setup.env)
    assert command.status == "failed"
    assert (command.error or "").startswith("gave up after 2 attempts: cancel not sent")
    assert exchange_order(sim, orderid)["order_status"] == "open"
    assert order_row(setup.env, setup.order_pk).status == "open"


async def test_cancel_when_api_key_rejected_fails_with_clear_message(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_requested(db_url, tmp_path, sim)
    orderid = setup.orderid
    sim.control.status_next(403, 1, endpoint="cancelorder", apikey=sim.api_keys[0])

    async with processor(setup.env) as engine:
        assert await engine.process_once() == 1
    [command] = commands(setup.env)
    assert command.status == "failed" and "rejected the account's API key" in (command.error or "")
    assert exchange_order(sim, orderid)["order_status"] == "open"
    assert [a for a, _ in cancel_actions(setup.env)] == ["order_cancel_requested", "order_cancel_failed"]


async def test_run_when_engine_died_mid_command_runs_it_again_on_start(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_requested(db_url, tmp_path, sim)
    orderid = setup.orderid
    # A previous engine claimed it, sent the cancel, and died before recording anything.
    with setup.env.database.session() as s:
        s.execute(update(EngineCommand).values(status="running", started_at=setup.env.clock.now()))
    body = {"apikey": sim.api_keys[0], "orderid": orderid, "strategy": "test"}
    assert httpx.post(sim.api_url + "/cancelorder", json=body, timeout=10).status_code == 200

    async with processor(setup.env) as engine:
        assert await engine.process_once() == 0  # running rows are not claimed by polling
        [command] = await run_until_ended(engine, setup.env)
    assert command.status == "done" and command.result is not None
    # The repeated cancel is refused (already cancelled) and the broker's state is recorded.
    assert (command.result["cancel"], command.result["broker_status"]) == ("refused", "cancelled")
    assert order_row(setup.env, setup.order_pk).status == "cancelled"


async def test_cancel_when_payload_names_another_users_account_fails_without_broker_call(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    orderid = place(sim, pricetype="LIMIT", price="5")
    setup = cancel_setup(db_url, tmp_path, sim, orderid)
    with setup.env.database.session() as s:
        mallory = User(username="mallory", email="m@example.com", password_hash="x")
        s.add(mallory)
        s.flush()
        make_account(s, mallory.id, "Mallory", host_url=sim.rest_url)
        s.add(
            EngineCommand(
                user_id=mallory.id,
                kind="cancel_order",
                payload={"account_id": setup.account_id, "order_id": orderid, "order_pk": setup.order_pk},
                token="forged-1",
            )
        )
    registry = CountingRegistry()
    engine = CommandProcessor(
        setup.env.database,
        registry,
        make_decryptor(setup.env.state.settings),
        clock=setup.env.clock,
        config=CommandConfig(poll_seconds=0.05),
    )
    try:
        assert await engine.process_once() == 1
    finally:
        await registry.aclose()
    [command] = commands(setup.env)
    assert command.status == "failed" and "not found" in (command.error or "")
    assert registry.made == []
    assert exchange_order(sim, orderid)["order_status"] == "open"


async def test_build_engine_when_built_runs_web_commands_on_its_registry(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    setup = cancel_requested(db_url, tmp_path, sim)
    service = build_engine(setup.env.state.settings, setup.env.database)
    [engine] = [c for c in service.components if c.name == "commands"]
    assert isinstance(engine, CommandProcessor)

    [command] = await run_until_ended(engine, setup.env)
    assert command.status == "done" and order_row(setup.env, setup.order_pk).status == "cancelled"
    # The registry is shared with sync: the service closes it once every component has stopped,
    # never the processor on its own.
    assert engine.registry.accounts != ()
    await engine.registry.aclose()
    assert engine.registry.accounts == ()


class SyncBetweenReplyAndWrite(HostPool):
    """The real aiohttp pool; when an ``orderstatus`` reply has arrived, and before the processor can
    store it, the account sync stores a newer orderbook row for that order (``newer`` maps the
    broker's reported row to what the sync saw a moment later)."""

    def __init__(self, env: WebEnv, account_id: int, newer: Callable[[BrokerOrder], BrokerOrder]) -> None:
        super().__init__()
        self.env, self.account_id, self.newer = env, account_id, newer
        self.synced: list[BrokerOrder] = []

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        connect: float,
        read: float,
        endpoint: str,
        order: bool,
        before_send: Callable[[], None] | None = None,
        order_lane: bool = False,
    ) -> Reply:
        reply = await super().post(
            url,
            body,
            connect=connect,
            read=read,
            endpoint=endpoint,
            order=order,
            before_send=before_send,
            order_lane=order_lane,
        )
        if endpoint == "orderstatus" and not self.synced:
            seen = self.newer(BrokerOrder.parse_status(json.loads(reply.body)))
            await asyncio.to_thread(self._sync, seen)
        return reply

    def _sync(self, seen: BrokerOrder) -> None:
        with self.env.database.session() as s:
            store_orders(s, self.account_id, [seen], fetched_at=self.env.clock.now())
        self.synced.append(seen)


async def cancel_with_sync_in_between(
    db_url: str, tmp_path: Path, sim: SimHandle, newer: Callable[[BrokerOrder], BrokerOrder]
) -> tuple[CancelSetup, SyncBetweenReplyAndWrite]:
    """A cancel whose outcome is unknown (the broker answers 500, nothing is cancelled), so the
    processor reads orderstatus once ("open") and the sync stores ``newer`` before that is written."""
    setup = cancel_requested(db_url, tmp_path, sim)
    sim.control.status_next(500, 1, endpoint="cancelorder", apikey=sim.api_keys[0])
    pool = SyncBetweenReplyAndWrite(setup.env, setup.account_id, newer)
    registry = ClientRegistry(timeouts=Timeouts(connect=2.0, read=5.0, order=5.0), pool=pool)
    engine = CommandProcessor(
        setup.env.database,
        registry,
        make_decryptor(setup.env.state.settings),
        clock=setup.env.clock,
        config=CommandConfig(poll_seconds=0.05, retry_delay=0.0),
    )
    try:
        assert await engine.process_once() == 1
    finally:
        await registry.aclose()
        await pool.aclose()
    assert len(pool.synced) == 1
    return setup, pool


async def test_cancel_when_sync_stores_complete_before_a_slower_open_orderstatus_keeps_complete(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    def filled(reported: BrokerOrder) -> BrokerOrder:
        assert reported.status is OrderState.OPEN  # what the slow orderstatus reply said
        return dataclasses.replace(
            reported,
            status=OrderState.COMPLETE,
            filled_quantity=65,
            pending_quantity=0,
            average_price=Decimal("4.9875"),
        )

    setup, _ = await cancel_with_sync_in_between(db_url, tmp_path, simulator_session, filled)
    row = order_row(setup.env, setup.order_pk)
    assert (row.status, row.filled_quantity, row.pending_quantity) == ("complete", 65, 0)
    assert row.average_price == Decimal("4.9875")
    [command] = commands(setup.env)
    assert command.status == "pending"  # unknown cancel outcome, order reported working: tried again


async def test_cancel_when_sync_stores_a_larger_fill_before_a_slower_orderstatus_keeps_the_fill(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    def part_filled(reported: BrokerOrder) -> BrokerOrder:
        assert reported.status is OrderState.OPEN and not reported.filled_quantity
        return dataclasses.replace(
            reported, filled_quantity=40, pending_quantity=25, average_price=Decimal("5.0125")
        )

    setup, _ = await cancel_with_sync_in_between(db_url, tmp_path, simulator_session, part_filled)
    row = order_row(setup.env, setup.order_pk)
    assert (row.status, row.filled_quantity, row.pending_quantity) == ("open", 40, 25)
    assert row.average_price == Decimal("5.0125")
