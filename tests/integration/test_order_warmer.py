"""The order warmer (engine/order_warmer.py) against the paper exchange over loopback, on SQLite and
PostgreSQL: one ping per account with an open position, through the order connections and all at once,
so that a breach's exit orders on those accounts then open no connection; nothing for a closed run, and
nothing while the engine does not hold the fencing epoch."""

from __future__ import annotations

import asyncio
import logging

import pytest

from algomirror.db.models import TradingAccount
from algomirror.engine.order_warmer import OrderWarmer, accounts_at_risk
from tests.helpers import eventually_async
from tests.integration.execution_support import make_world
from tests.integration.test_engine_exit_batch import breach, entered
from tests.integration.web_support import unused_port
from tests.sim_fixtures import SimHandle

SHORT = (("SELL", "25800PE"),)


async def test_a_warm_up_opens_one_order_connection_per_account_at_risk_and_the_exit_opens_none(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=3, legs=SHORT)
    run_id = await entered(world)
    assert [a.id for a in accounts_at_risk(world.database)] == sorted(world.account_ids)
    exits, registry = world.exit_executor()
    try:
        warmer = OrderWarmer(world.database, exits, interval=60.0)
        assert await warmer.warm_once() == 3
        assert (warmer.rounds, warmer.pings, warmer.failed) == (1, 3, 0)
        # The three accounts share the exchange's origin: three pings at once keep three open.
        assert registry.pool.connections_opened(order=True) == 3
        assert registry.pool.connections_opened(order=False) == 0
        await exits.run_command(breach(world, run_id))
        assert {e.status for e in world.executions(run_id)} == {"exited"}
        assert all(len(world.exchange_orders(i)) == 2 for i in range(3))  # entry + exit each
        assert registry.pool.connections_opened(order=True) == 3  # every exit order found one open
        # The run is closed: nobody is at risk and the next round pings nothing.
        assert accounts_at_risk(world.database) == []
        assert await warmer.warm_once() == 0
        assert warmer.rounds == 1
    finally:
        await registry.aclose()


async def test_the_warmer_pings_nothing_while_the_engine_does_not_hold_the_epoch(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=SHORT)
    await entered(world)
    exits, registry = world.exit_executor()
    exits._current_epoch = lambda: None  # type: ignore[method-assign]  # fenced out, or not yet in
    stop = asyncio.Event()
    try:
        warmer = OrderWarmer(world.database, exits, interval=0.01)
        task = asyncio.create_task(warmer.run(stop))

        async def looked_five_times() -> bool:
            return warmer.checks >= 5

        await eventually_async(looked_five_times, timeout=5.0)
        stop.set()
        await task
        assert (warmer.rounds, warmer.pings) == (0, 0)
        assert registry.pool.connections_opened(order=True) == 0
    finally:
        await registry.aclose()


async def test_a_running_warmer_pings_accounts_as_soon_as_they_come_at_risk_not_an_interval_later(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=SHORT)
    exits, registry = world.exit_executor()
    stop = asyncio.Event()
    try:
        # An interval far longer than the test: only the "new account at risk" rule can ping in time.
        warmer = OrderWarmer(world.database, exits, interval=600.0)
        task = asyncio.create_task(warmer.run(stop))

        async def looked() -> bool:
            return warmer.checks >= 1

        await eventually_async(looked, timeout=5.0)
        assert warmer.pings == 0  # nothing at risk yet
        await entered(world)

        async def warmed() -> bool:
            return warmer.pings == 2

        await eventually_async(warmed, timeout=10.0, what="both accounts pinged")
        assert warmer.rounds == 1
        assert registry.pool.connections_opened(order=True) == 2
        stop.set()
        await task
    finally:
        stop.set()
        await registry.aclose()


async def test_an_unreachable_account_is_counted_and_said_once_not_every_round(
    db_url: str, simulator_session: SimHandle, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=SHORT)
    await entered(world)
    with world.database.session() as session:
        account = session.get(TradingAccount, world.account_ids[1])
        assert account is not None
        account.host_url = f"http://127.0.0.1:{unused_port()}"
    exits, registry = world.exit_executor()
    try:
        warmer = OrderWarmer(world.database, exits, interval=60.0)
        with caplog.at_level(logging.INFO, logger="algomirror.engine.order_warmer"):
            assert await warmer.warm_once() == 1
            assert await warmer.warm_once() == 1
        assert (warmer.pings, warmer.failed) == (2, 2)
        said = [r for r in caplog.records if r.levelno >= logging.INFO and "ping of" in r.getMessage()]
        assert len(said) == 1 and "failed" in said[0].getMessage()
    finally:
        await registry.aclose()
