"""Mirror order against the paper exchange over loopback, on SQLite and PostgreSQL: one order to
several accounts with a lot multiplier each, freeze-sliced, every slice journaled (``mirror:…`` keys,
purpose manual, tag ``AM-M{command}``), exactly once however often the command runs, an unknown
outcome resolved by tag, a rejected account reported while the others fill."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import EngineCommand, TradingAccount
from algomirror.domain import order_state
from algomirror.engine.execution import ExecutionConfig
from algomirror.engine.mirror import MirrorExecutor, mirror_tag, request_mirror
from algomirror.engine.order_driver import DriverConfig
from tests.factories import make_user
from tests.integration.execution_support import World, make_world, nifty
from tests.sim_fixtures import SimHandle, on_both_profiles

SYMBOL = nifty("25500PE")
LOT = 65


@asynccontextmanager
async def mirror_executor(world: World, *, order_timeout: float = 5.0) -> AsyncIterator[MirrorExecutor]:
    registry = ClientRegistry(
        timeouts=Timeouts(connect=2.0, read=5.0, order=order_timeout), retry=RetryPolicy(attempts=1)
    )
    driver = DriverConfig(
        fill_timeout=5.0,
        status_interval=0.05,
        resolve_seconds=3.0,
        resolve_interval=0.1,
        send_retry_delay=0.05,
    )
    config = ExecutionConfig(poll_seconds=0.05, retry_delay=0.0, driver=driver)
    executor = MirrorExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=config
    )
    try:
        yield executor
    finally:
        await registry.aclose()


def queue(world: World, multipliers: list[str], *, lots: int = 2, token: str = "m-1", **extra: Any) -> int:
    payload: dict[str, Any] = {
        "symbol": SYMBOL,
        "exchange": "NFO",
        "product": "NRML",
        "side": "BUY",
        "lots": lots,
        "order_type": "MARKET",
        "price": None,
        "trigger_price": None,
        "accounts": [
            {"account_id": world.account_ids[i], "multiplier": m} for i, m in enumerate(multipliers)
        ],
        **extra,
    }
    with world.database.session() as session:
        return request_mirror(
            session, user_id=world.user_id, payload=payload, token=token, now=world.clock.now()
        ).id


def by_account(world: World, command_id: int) -> dict[int, dict[str, Any]]:
    result = world.command(command_id).result or {}
    return {a["account_id"]: a for a in result["accounts"]}


@on_both_profiles
async def test_mirror_to_three_accounts_with_multipliers(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=3, legs=(("BUY", "25500PE"),))
    command_id = queue(world, ["1", "2", "0.5"], lots=3)

    async with mirror_executor(world) as executor:
        assert await executor.process_once() == 1

    command = world.command(command_id)
    assert command.status == "done", command.error
    # 3 lots × 1, × 2, × 0.5 (1.5 rounded down to 1): one order each, exactly those quantities.
    for index, lots in enumerate((3, 6, 1)):
        [order] = world.exchange_orders(index)
        assert (order.symbol, order.action, order.quantity) == (SYMBOL, "BUY", lots * LOT)
        assert order.status == "complete" and order.strategy == mirror_tag(command_id)
        report = by_account(world, command_id)[world.account_ids[index]]
        assert report["status"] == "filled" and report["lots"] == lots
        assert report["filled"] == report["quantity"] == lots * LOT
        assert report["orders"] == [order.orderid] and report["average"] is not None
    intents = world.intents()
    assert {(i.purpose, i.execution_id, i.strategy_tag) for i in intents} == {
        ("manual", None, mirror_tag(command_id))
    }
    assert sorted(i.key for i in intents) == sorted(f"mirror:{command_id}:{a}:1" for a in world.account_ids)


@on_both_profiles
async def test_zero_lots_skipped_with_the_reason_and_cap_applies(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"),))
    with world.database.session() as session:
        account = session.get(TradingAccount, world.account_ids[1])
        assert account is not None
        account.max_lots_per_leg = 2
    command_id = queue(world, ["0.4", "5"], lots=2)

    async with mirror_executor(world) as executor:
        assert await executor.process_once() == 1

    assert world.command(command_id).status == "done"
    assert world.exchange_orders(0) == []
    skipped = by_account(world, command_id)[world.account_ids[0]]
    assert skipped["status"] == "skipped" and "rounds down to 0 lots" in skipped["note"]
    [order] = world.exchange_orders(1)
    assert order.quantity == 2 * LOT
    capped = by_account(world, command_id)[world.account_ids[1]]
    assert capped["lots"] == 2 and "capped at 2 lots" in capped["note"]


async def test_freeze_sliced(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    command_id = queue(world, ["1"], lots=30)  # 1950 units; freeze 1800 → 1755 + 195

    async with mirror_executor(world) as executor:
        assert await executor.process_once() == 1

    assert world.command(command_id).status == "done"
    # The slices are sent together, so they may reach the exchange in either order (a CI run saw 195
    # first); which slice is which is the journal's, by key.
    assert sorted((o.quantity for o in world.exchange_orders(0)), reverse=True) == [1755, 195]
    assert [(i.key, i.quantity) for i in world.intents()] == [
        (f"mirror:{command_id}:{world.account_ids[0]}:{n}", q) for n, q in ((1, 1755), (2, 195))
    ]
    report = by_account(world, command_id)[world.account_ids[0]]
    assert report["status"] == "filled" and report["filled"] == 1950 and len(report["orders"]) == 2


@on_both_profiles
async def test_command_run_again_and_by_two_executors_sends_one_set(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"),))
    command_id = queue(world, ["1", "1"], lots=1)

    async with mirror_executor(world) as one, mirror_executor(world) as two:
        claimed = await asyncio.gather(one.run_command(command_id), two.run_command(command_id))
    assert sorted(claimed) == [False, True]  # one claim only
    # A retried command (an engine that died while it ran): back to pending, run by a new executor.
    with world.database.session() as session:
        row = session.get(EngineCommand, command_id)
        assert row is not None
        row.status, row.finished_at = "running", None
    async with mirror_executor(world) as restarted:
        assert restarted.recover() == 1
        assert await restarted.process_once() == 1
    assert world.command(command_id).status == "done"
    assert [len(world.exchange_orders(i)) for i in range(2)] == [1, 1]
    assert len(world.intents()) == 2


@on_both_profiles
async def test_timeout_after_placement_is_resolved_by_tag_without_a_second_order(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    command_id = queue(world, ["1"], lots=1)
    sim.control.hang_next(1, seconds=2.5, execute=True, endpoint="placeorder", apikey=sim.api_keys[0])

    async with mirror_executor(world, order_timeout=0.5) as executor:
        assert await executor.process_once() == 1

    [order] = world.exchange_orders(0)
    [intent] = world.intents()
    assert intent.order_id == order.orderid and intent.state == order_state.COMPLETE
    assert "outcome unknown" in (intent.rejection_reason or "")
    assert world.command(command_id).status == "done"
    assert by_account(world, command_id)[world.account_ids[0]]["orders"] == [order.orderid]


@on_both_profiles
async def test_rejected_account_reported_while_the_others_fill(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=3, legs=(("BUY", "25500PE"),))
    sim.control.reject_next(1, "RMS: margin exceeds", apikey=sim.api_keys[1])
    command_id = queue(world, ["1", "1", "1"], lots=1)

    async with mirror_executor(world) as executor:
        assert await executor.process_once() == 1

    assert world.command(command_id).status == "done"
    reports = by_account(world, command_id)
    assert [reports[a]["status"] for a in world.account_ids] == ["filled", "rejected", "filled"]
    assert any("margin exceeds" in e for e in reports[world.account_ids[1]]["errors"])
    assert [o.status for o in world.exchange_orders(0) + world.exchange_orders(2)] == ["complete"] * 2


async def test_mirror_check_correction_sends_the_exact_difference(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"),))
    # What "Bring in line" queues: one account, the difference in units, the run and reason on record.
    command_id = queue(world, ["1"], lots=2, quantity=130, run_id=7, reason="mirror_check", side="SELL")

    before = world.clock.now()
    async with mirror_executor(world) as executor:
        assert await executor.process_once() == 1

    assert world.command(command_id).status == "done"
    # The finish time on the market clock (the one the sync stamps positions by), for the mirror check.
    finished = datetime.fromisoformat((world.command(command_id).result or {})["market_finished_at"])
    assert before <= finished <= world.clock.now()
    [order] = world.exchange_orders(0)
    assert (order.action, order.quantity) == ("SELL", 130)
    assert world.exchange_orders(1) == []


async def test_another_users_account_gets_nothing(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=(("BUY", "25500PE"),))
    with world.database.session() as session:
        stranger = make_user(session, "stranger").id
        account = session.get(TradingAccount, world.account_ids[1])
        assert account is not None
        account.user_id = stranger  # the second paper account now belongs to someone else
    command_id = queue(world, ["1", "1"], lots=1)

    async with mirror_executor(world) as executor:
        assert await executor.process_once() == 1

    reports = by_account(world, command_id)
    assert reports[world.account_ids[0]]["status"] == "filled"
    assert reports[world.account_ids[1]]["status"] == "skipped"
    assert reports[world.account_ids[1]]["errors"] == ["account not found"]
    assert world.exchange_orders(1) == []


async def test_restart_after_only_some_slices_were_recorded_sends_the_rest(
    db_url: str, simulator_session: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review regression: an engine that died after recording slice 1 of 2 must, on restart, record
    and send slice 2 as well, and report ``filled`` only for every requested unit."""
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    command_id = queue(world, ["1"], lots=30)  # 1950 units: 1755 + 195
    original = MirrorExecutor._record

    def dies_after_the_first(
        self: MirrorExecutor, driver: Any, command: int, request: Any, account_id: int, slices: list[int]
    ) -> Any:
        original(self, driver, command, request, account_id, slices[:1])
        raise RuntimeError("engine killed between two slices' intents")

    monkeypatch.setattr(MirrorExecutor, "_record", dies_after_the_first)
    async with mirror_executor(world) as executor:
        with contextlib.suppress(RuntimeError):
            await executor.process_once()
    assert [i.quantity for i in world.intents()] == [1755]
    monkeypatch.setattr(MirrorExecutor, "_record", original)
    with world.database.session() as session:
        row = session.get(EngineCommand, command_id)
        assert row is not None
        row.status, row.finished_at = "running", None
    async with mirror_executor(world) as restarted:
        restarted.recover()
        await restarted.process_once()
    assert sorted(o.quantity for o in world.exchange_orders(0)) == [195, 1755]
    report = by_account(world, command_id)[world.account_ids[0]]
    assert report["status"] == "filled" and report["filled"] == 1950 and report["quantity"] == 1950
