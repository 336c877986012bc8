"""The chaos auditor against a real run on the paper exchange over loopback, on SQLite and PostgreSQL: a
run entered and exited by the engine audits clean; one more order with the strategy's tag, placed at the
exchange by hand, is counted as a duplicate; the ledger read over HTTP is the exchange's own."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from algomirror.chaos.audit import audit, fetch_ledger
from algomirror.engine.entry_records import strategy_tag
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.exits import ExitExecutor
from tests.integration.execution_support import World, executor_of, make_world
from tests.sim_fixtures import SimHandle

HEDGED = (("BUY", "25500PE"), ("SELL", "25800PE"))


async def enter(world: World) -> int:
    """Enter a run of both legs on every account; returns the run id."""
    run_id, _ = world.plan()
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert {e.status for e in world.executions(run_id)} == {"active"}
    return run_id


async def exit_run(world: World, run_id: int) -> None:
    """Exit the whole run through the engine's exit path."""
    with world.database.session() as session:
        request_exit(session, user_id=world.user_id, scope="run", token="exit-run", run_id=run_id)
    entry, registry = world.executor()
    exits = ExitExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=entry.config
    )
    try:
        assert await exits.process_once() == 1
    finally:
        await registry.aclose()
    assert {e.status for e in world.executions(run_id)} == {"exited"}
    assert world.run(run_id).status == "closed"


async def test_a_real_run_audits_clean_and_a_hand_placed_tagged_order_is_a_duplicate(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=2, legs=HEDGED)
    try:
        keys = {account_id: sim.api_keys[i] for i, account_id in enumerate(world.account_ids)}
        run_id = await enter(world)

        # Entered, not exited: sound at this instant, but at the end every leg would be a missed exit.
        ledger = await asyncio.to_thread(fetch_ledger, sim.rest_url, sim.control_token)
        assert audit(world.database, ledger, account_keys=keys, final=False).ok
        report = audit(world.database, ledger, account_keys=keys, final=True)
        assert len(report.missed_exits) == 4, report
        assert report.unexplained == [
            f"run {run_id} (strategy {world.strategy_id}): left active with no alert"
        ]
        assert report.duplicates == report.reversed_positions == report.buy_first_violations == []

        await exit_run(world, run_id)

        ledger = await asyncio.to_thread(fetch_ledger, sim.rest_url, sim.control_token)
        # Over HTTP: the exchange's own orders, every one of them (2 accounts × 2 legs × entry and exit).
        assert sorted(o.orderid for o in ledger.orders) == sorted(
            o.orderid for o in world.all_exchange_orders()
        )
        assert len(ledger.orders) == 8 and len(ledger.trades) >= 8
        assert {o.strategy for o in ledger.orders} == {strategy_tag(world.strategy_id)}
        for order in ledger.orders:
            mine = sim.running.core.exchange.accounts[order.account_key].orders[order.orderid]
            assert (order.filled_quantity, order.average_price, order.created) == (
                mine.filled_quantity,
                mine.average_price,
                mine.created,
            )

        for final in (False, True):
            report = audit(world.database, ledger, account_keys=keys, final=final)
            assert report.defects == 0, report
            assert report.orders == 8

        # A second order of the hedge, tagged as the strategy's, that no intent of ours sent.
        reply = httpx.post(
            sim.api_url + "/placeorder",
            json={
                "apikey": sim.api_keys[1],
                "strategy": strategy_tag(world.strategy_id),
                "symbol": world.leg_symbols[0],
                "exchange": "NFO",
                "action": "BUY",
                "product": "NRML",
                "pricetype": "MARKET",
                "quantity": "65",
            },
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        stray = str(reply.json()["orderid"])

        ledger = await asyncio.to_thread(fetch_ledger, sim.rest_url, sim.control_token)
        assert len(ledger.orders) == 9
        for final in (False, True):
            report = audit(world.database, ledger, account_keys=keys, final=final)
            assert report.orders == 9
            assert len(report.duplicates) == 1 and stray in report.duplicates[0], report
            assert f"account {world.account_ids[1]}" in report.duplicates[0]
            assert report.defects == 1, report
    finally:
        world.database.dispose()


def test_the_ledger_wants_the_control_token(simulator_session: SimHandle) -> None:
    with pytest.raises(httpx.HTTPStatusError) as raised:
        fetch_ledger(simulator_session.rest_url, "not-the-token")
    assert raised.value.response.status_code == 401
