"""Realised P&L from the broker's fills (engine/pnl_trueup.py): an order filled at two prices has an
average the broker rounds, so the P&L first written from averages is off by paise; the account sync's
tradebook read rewrites it from the fills, to the paisa of the exchange's own figure (found by the chaos
auditor: +126.10 recorded against the exchange's +126.75)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import update

from algomirror.chaos.audit import audit, fetch_ledger
from algomirror.db.models import StrategyRun
from algomirror.engine.sync import AccountSync
from tests.helpers import eventually_async
from tests.integration.execution_support import executor_of, make_world
from tests.integration.test_chaos_audit import exit_run
from tests.sim_fixtures import SimHandle


async def test_an_entry_filled_at_two_prices_gets_its_exact_pnl_from_the_tradebook(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = make_world(db_url, sim, accounts=1, legs=(("BUY", "25500PE"),))
    run_id, _ = world.plan(quantity=130)
    sim.control.partial_fill(1, 0.5, apikey=sim.api_keys[0])
    async with executor_of(world) as executor:
        entering = asyncio.create_task(executor.process_once())

        async def half() -> bool:
            orders = world.all_exchange_orders()
            return len(orders) == 1 and orders[0].filled_quantity == 65

        await eventually_async(half, timeout=10)
        spot = sim.running.core.market.quote("NIFTY", "NSE_INDEX")
        assert spot is not None
        sim.control.set_price("NIFTY", "NSE_INDEX", spot.ltp - 37)  # the rest fills at another price
        sim.control.advance(5)
        assert await entering == 1
    await exit_run(world, run_id)

    ledger = fetch_ledger(sim.rest_url, sim.control_token)
    keys = {world.account_ids[0]: sim.api_keys[0]}
    fills = [t for t in ledger.trades if t.account_key == sim.api_keys[0]]
    assert len({t.price for t in fills if t.action == "BUY"}) == 2, "the entry filled at two prices"
    exchange_pnl = sum((t.price * t.quantity * (1 if t.action == "SELL" else -1) for t in fills), Decimal(0))
    [before] = world.executions(run_id)
    # From the rounded averages (the orderbook's): close, but not the exchange's figure.
    assert before.realized_pnl != exchange_pnl
    assert audit(world.database, ledger, account_keys=keys, final=True).pnl_mismatches

    sync = AccountSync(world.database, world.box.decrypt, clock=world.clock)
    try:
        await sync.sync_account_once(world.account_ids[0])
    finally:
        await sync.aclose()

    [after] = world.executions(run_id)
    assert after.realized_pnl == exchange_pnl
    assert world.run(run_id).final_pnl == exchange_pnl
    report = audit(world.database, ledger, account_keys=keys, final=True)
    assert report.ok, report

    # Review: a run closed (summing the old figure) while a true-up's transaction was open kept a stale
    # total, since its execution no longer changed. Every pass now re-totals the runs it looks at.
    with world.database.session() as session:
        session.execute(update(StrategyRun).where(StrategyRun.id == run_id).values(final_pnl=Decimal("1.00")))
    sync = AccountSync(world.database, world.box.decrypt, clock=world.clock)
    try:
        await sync.sync_account_once(world.account_ids[0])
    finally:
        await sync.aclose()
    assert world.run(run_id).final_pnl == exchange_pnl
