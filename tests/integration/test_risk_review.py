"""Regression tests for money bugs found reviewing the risk engine and the feed manager (issue 12), on
SQLite and PostgreSQL against the paper exchange over loopback:

* a leg whose rule settings cannot be evaluated (a negative trailing value) must not switch off the
  run's max loss (nor the other runs' rules);
* a rule fired through :meth:`RiskEngine.fire` (Supertrend) skips executions another rule already claimed;
* a leg trailing stop that moves while a breach is being written is still persisted afterwards (it must
  not come back lower after a restart);
* an unexpected error while recording a breach is logged and the breach is tried again (not lost);
* an execution in ``error`` (its exit failed, units still open) keeps its symbol subscribed, and a
  healthy feed that leaves a leg unpriced gets REST quotes for it;
* a failed reload of the open runs does not skip the sweep's evaluation of what memory holds;
* a REST quote's age counts from its request (a slow reply does not make an old price look fresh).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import StrategyExecution
from algomirror.engine.feeds import MODE_QUOTE, FeedManager, UserFeed
from algomirror.engine.marks import Mark, MarkBook
from algomirror.engine.risk import Breach, RiskConfig, RiskEngine
from tests.helpers import eventually_async
from tests.integration.execution_support import make_world
from tests.integration.test_risk_engine import (
    QTY,
    STRANGLE,
    all_exited,
    configure,
    configure_leg,
    entered,
    entries,
    events,
    exit_commands,
    exits_at_exchange,
    risk_of,
)
from tests.sim_fixtures import SimHandle


async def test_a_leg_that_cannot_be_evaluated_does_not_switch_off_max_loss(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    # Nothing in the schema stops a negative trailing value; the rule arithmetic refuses it.
    configure_leg(world, 0, enable_trailing=True, trailing_type="points", trailing_value=Decimal("-5"))
    run_id = await entered(world)
    configure(world, max_loss=Decimal("1000"))
    price = entries(world, run_id)
    ce, pe = world.leg_symbols

    async with risk_of(world) as h:
        h.tick(pe, price[(1, 0)])
        h.tick(ce, price[(0, 0)] + 20)  # −₹1,300
        await all_exited(world, run_id)
        await h.risk.drain()
    assert {r.event_type for r in events(world, run_id)} == {"max_loss"}
    assert exits_at_exchange(world) == {0: sorted([ce, pe])}


async def test_fire_skips_executions_another_rule_claimed(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    configure_leg(world, 0, stop_loss_type="points", stop_loss_value=Decimal("10"))
    run_id = await entered(world)
    price = entries(world, run_id)
    ce, pe = world.leg_symbols
    call, put = (next(e.id for e in world.executions(run_id) if e.symbol == s) for s in (ce, pe))

    async with risk_of(world, dispatch=False) as h:  # exits stay pending: the rows stay active
        h.tick(pe, price[(1, 0)])
        h.tick(ce, price[(0, 0)] + 10)  # the call's SL claims it

        async def recorded() -> bool:
            return len(events(world, run_id)) == 1

        await eventually_async(recorded, timeout=10, what="the stop loss recorded")
        run = h.risk.runs[run_id]
        # A candle-close rule (Supertrend) fires for the whole run afterwards.
        h.risk.fire(run, Breach("supertrend_exit", Decimal("-650"), None, "breakout"), [call, put])
        await h.risk.drain()
    rows = events(world, run_id)
    assert sorted((r.event_type, r.strategy_execution_id) for r in rows) == sorted(
        [("stop_loss", call), ("supertrend_exit", put)]
    )


class GatedRisk(RiskEngine):
    """Holds every breach write until ``gate`` is set (a slow database)."""

    gate = threading.Event()
    waiting = threading.Event()

    def _write_breach(self, *args: Any) -> Any:
        self.waiting.set()
        assert self.gate.wait(20)
        return super()._write_breach(*args)


async def test_a_leg_stop_that_trails_during_a_breach_write_is_still_persisted(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    # The short call trails 10 points; the short put has a 5-point stop loss.
    configure_leg(world, 0, enable_trailing=True, trailing_type="points", trailing_value=Decimal("10"))
    configure_leg(world, 1, stop_loss_type="points", stop_loss_value=Decimal("5"))
    run_id = await entered(world)
    price = entries(world, run_id)
    ce, pe = world.leg_symbols
    call = next(e.id for e in world.executions(run_id) if e.symbol == ce)
    GatedRisk.gate.clear()
    GatedRisk.waiting.clear()

    # No periodic write meanwhile: what the breach leaves dirty is written when the component stops.
    async with risk_of(world, engine=GatedRisk, dispatch=False, persist_seconds=3600) as h:
        h.tick(pe, price[(1, 0)])
        h.tick(ce, price[(0, 0)] - 4)  # SELL: best = e − 4 → stop e + 6
        h.tick(pe, price[(1, 0)] + 5)  # the put's SL: its write waits at the gate with the call at e + 6

        async def writing() -> bool:
            return GatedRisk.waiting.is_set()

        await eventually_async(writing, timeout=10, what="the breach write started")
        h.tick(ce, price[(0, 0)] - 8)  # meanwhile the call trails on: stop e + 2
        moved = h.risk.runs[run_id].executions[call].stop_loss
        assert moved == price[(0, 0)] + 2
        GatedRisk.gate.set()
        await h.risk.drain()
    row = next(e for e in world.executions(run_id) if e.id == call)
    assert row.stop_loss_price == moved
    [event] = events(world, run_id)
    assert event.event_type == "stop_loss"


class FlakyRisk(RiskEngine):
    """The first breach write fails with an error nobody expected."""

    failed = 0

    def _write_breach(self, *args: Any) -> Any:
        if FlakyRisk.failed == 0:
            FlakyRisk.failed += 1
            raise RuntimeError("boom")
        return super()._write_breach(*args)


async def test_an_unexpected_error_recording_a_breach_is_logged_and_retried(
    db_url: str, simulator_session: SimHandle, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("1000"))
    price = entries(world, run_id)
    ce, pe = world.leg_symbols
    FlakyRisk.failed = 0

    with caplog.at_level(logging.ERROR, logger="algomirror.engine"):
        async with risk_of(world, engine=FlakyRisk) as h:
            h.tick(pe, price[(1, 0)])
            h.tick(ce, price[(0, 0)] + 20)
            await all_exited(world, run_id)  # the sweep tries again after the failure
            await h.risk.drain()
    assert FlakyRisk.failed == 1
    assert [c.token for c in exit_commands(world)] == [f"risk:{run_id}:max_loss"]
    assert len(events(world, run_id)) == 2
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records if "max_loss" in r.message)


async def test_an_execution_in_error_keeps_its_symbol_subscribed(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    ce, pe = world.leg_symbols
    call = next(e.id for e in world.executions(run_id) if e.symbol == ce)
    with world.database.session() as session:  # its exit gave up after the retries: units still open
        session.execute(update(StrategyExecution).where(StrategyExecution.id == call).values(status="error"))
    manager = FeedManager(world.database, ClientRegistry(), world.box.decrypt)
    await manager.refresh_once()
    assert {(s, e) for s, e, m in manager.wanted(world.user_id) if m == MODE_QUOTE} >= {
        (ce, "NFO"),
        (pe, "NFO"),
    }
    assert QTY == 65


async def test_a_healthy_feed_that_leaves_a_leg_unpriced_gets_rest_marks_for_that_leg(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    ce, pe = world.leg_symbols
    book = MarkBook()
    registry = ClientRegistry()
    manager = FeedManager(world.database, registry, world.box.decrypt, marks=book, market_clock=world.clock)
    try:
        await manager.refresh_once()
        account = world.account_ids[0]
        # The user's feed is up and prices the call; the put is quiet (or its subscription was refused).
        # Without a price for the put the run's P&L is unknown and no rule can fire. (The feed's state is
        # set directly: the paper exchange ticks every symbol, so a quiet one cannot be staged there.)
        manager._feeds[world.user_id] = UserFeed(world.user_id, state="connected", healthy=True)
        book.set_feed_health(account, True)
        assert book.update(ce, "NFO", Mark(Decimal("100"), world.clock.now(), "ws", account))
        assert await manager.rest_once(world.user_id) == 1
        put, call = book.get(pe, "NFO"), book.get(ce, "NFO")
        assert put is not None and put.source == "rest" and put.ltp > 0
        assert call is not None and call.source == "ws" and call.ltp == Decimal("100")
        assert manager.status(world.user_id).rest
        assert {e.status for e in world.executions(run_id)} == {"active"}
    finally:
        await registry.aclose()


class ReloadFails(RiskEngine):
    """Reloading the open runs fails (a locked or unreachable database) once they are loaded."""

    broken = False

    async def load(self) -> None:
        if self.broken:
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        await super().load()


async def test_a_failed_reload_does_not_skip_the_sweeps_evaluation(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    configure(world, max_loss=Decimal("1000"))
    price = entries(world, run_id)
    ce, pe = world.leg_symbols
    book = MarkBook()
    risk = ReloadFails(world.database, book, clock=world.clock, config=RiskConfig(reload_seconds=0))
    await risk.load()
    # No listener: only the sweep evaluates these marks (as for a run whose symbols stopped ticking).
    book.update(pe, "NFO", Mark(price[(1, 0)], world.clock.now(), "rest", None))
    book.update(ce, "NFO", Mark(price[(0, 0)] + 20, world.clock.now(), "rest", None))
    risk.broken = True
    await risk.sweep()
    await risk.drain()
    assert risk.fired == 1
    assert [r.event_type for r in events(world, run_id)] == ["max_loss", "max_loss"]  # one per leg


class WallClock:
    """The market clock at T0, moving with the wall clock (so time passes while a call is in flight)."""

    def __init__(self, start: datetime) -> None:
        self.start, self.started = start, time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.started)


async def test_a_rest_quote_is_as_old_as_its_request_not_its_slow_reply(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    await entered(world)
    ce, _ = world.leg_symbols
    book = MarkBook()
    registry = ClientRegistry()
    clock = WallClock(world.clock.now())
    manager = FeedManager(world.database, registry, world.box.decrypt, marks=book, market_clock=clock)
    simulator_session.control.latency(1500, endpoint="multiquotes")
    try:
        await manager.refresh_once()
        asked = clock.now()
        assert await manager.rest_once(world.user_id) == 2  # no feed at all: every leg is quoted
        answered = clock.now()
        mark = book.get(ce, "NFO")
        assert mark is not None and mark.source == "rest"
        # Its 5 s of use count from the request: a price that took 1.5 s to come is 1.5 s old already.
        assert answered - asked >= timedelta(seconds=1.5)
        assert mark.at - asked < timedelta(seconds=0.5)
    finally:
        simulator_session.control.latency(0, endpoint="multiquotes")
        await registry.aclose()
