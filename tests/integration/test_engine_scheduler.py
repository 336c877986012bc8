"""The scheduler (engine/scheduler.py) on SQLite and PostgreSQL with chosen instants: scheduled entries
queued once per day (two ticks, a restart), none on holidays, weekends or non-matching days; a missed
entry beyond the grace window logged once and never sent; exits and square-offs at their times and at
once after a restart that missed them; square-off blocks later entries; IST times; and end to end, a
scheduled entry resolved, entered and time-exited on the paper exchange over loopback."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from algomirror.config import load_settings
from algomirror.db.models import (
    ActivityLog,
    EngineCommand,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
)
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock, ist_combine
from algomirror.engine.exits import ExitExecutor
from algomirror.engine.factory import build_engine
from algomirror.engine.scheduler import (
    ENTRY_MISSED_ACTION,
    EXECUTE_STRATEGY,
    MIS_WARNING_ACTION,
    Scheduler,
)
from tests.factories import make_account, make_user
from tests.helpers import eventually_async
from tests.integration.execution_support import T0, World, executor_of
from tests.integration.resolution_support import STRADDLE, resolution_world, resolver_of
from tests.sim_fixtures import SimHandle

WED = date(2026, 12, 9)  # regular trading day, no NIFTY expiry
TUE = date(2026, 12, 8)  # NIFTY weekly expiry
SAT = date(2026, 12, 12)
CHRISTMAS = date(2026, 12, 25)  # Friday, NSE holiday
CREATED = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # strategies exist well before the days tested


def ist(hh: int, mm: int, ss: int = 0, day: date = WED) -> datetime:
    return ist_combine(day, time(hh, mm, ss))


_names = itertools.count(1)


class Setup:
    def __init__(self, database: Database) -> None:
        self.database = database
        with database.session() as session:
            user = make_user(session, "sched")
            self.user_id = user.id
            self.account_id = make_account(session, user.id, "acct-1").id

    def strategy(
        self,
        *,
        entry: time | None = time(9, 20),
        exit_at: time | None = time(15, 0),
        square_off: time | None = time(15, 15),
        condition: str = "any",
        expiry: str = "current_week",
        **fields: Any,
    ) -> int:
        with self.database.session() as session:
            strategy = Strategy(
                user_id=self.user_id,
                name=f"strategy {next(_names)}",
                market_condition=condition,
                entry_time=entry,
                exit_time=exit_at,
                square_off_time=square_off,
                **{"created_at": CREATED, **fields},
            )
            session.add(strategy)
            session.flush()
            session.add(
                StrategyLeg(
                    strategy_id=strategy.id,
                    leg_number=1,
                    instrument="NIFTY",
                    product_type="options",
                    expiry=expiry,
                    action="SELL",
                    option_type="CE",
                    strike_selection="ATM",
                    order_type="MARKET",
                    lots=1,
                )
            )
            return strategy.id

    def open_run(
        self, strategy_id: int, started: datetime, *, product: str = "MIS", status: str = "active"
    ) -> int:
        with self.database.session() as session:
            leg_id = session.scalar(select(StrategyLeg.id).where(StrategyLeg.strategy_id == strategy_id))
            assert leg_id is not None
            run = StrategyRun(strategy_id=strategy_id, status="active", started_at=started)
            session.add(run)
            session.flush()
            session.add(
                StrategyExecution(
                    strategy_id=strategy_id,
                    account_id=self.account_id,
                    leg_id=leg_id,
                    run_id=run.id,
                    symbol="NIFTY15DEC2626000CE",
                    exchange="NFO",
                    product=product,
                    status=status,
                    quantity=65,
                )
            )
            return run.id

    def scheduler(self, grace: int = 120) -> Scheduler:
        """A new component instance: a restart keeps nothing but the database."""
        return Scheduler(self.database, grace=timedelta(seconds=grace), clock=FakeClock(ist(8, 0)))

    def commands(self, kind: str | None = None) -> list[EngineCommand]:
        with self.database.session_factory() as session:
            query = select(EngineCommand).order_by(EngineCommand.id)
            if kind is not None:
                query = query.where(EngineCommand.kind == kind)
            return list(session.scalars(query).all())

    def activity(self, action: str) -> list[ActivityLog]:
        with self.database.session_factory() as session:
            return list(session.scalars(select(ActivityLog).where(ActivityLog.action == action)).all())


@pytest.fixture
def world(database: Database) -> Setup:
    return Setup(database)


def test_entry_queued_once_at_entry_time_across_ticks_and_a_restart(world: Setup) -> None:
    sid = world.strategy()
    scheduler = world.scheduler()
    assert scheduler.tick(ist(9, 19, 59)).queued == []
    report = scheduler.tick(ist(9, 20))
    token = f"sched:{sid}:2026-12-09:entry"
    assert report.queued == [token]
    assert scheduler.tick(ist(9, 20, 1)).queued == []
    assert world.scheduler().tick(ist(9, 21)).queued == []  # restart within grace
    [command] = world.commands(EXECUTE_STRATEGY)
    assert command.token == token and command.status == "pending" and command.user_id == world.user_id
    assert command.payload == {
        "strategy_id": sid,
        "source": "schedule",
        "scheduled_for": "2026-12-09T03:50:00+00:00",
    }
    # The next trading day queues its own entry.
    assert world.scheduler().tick(ist(9, 20, day=date(2026, 12, 10))).queued == [
        f"sched:{sid}:2026-12-10:entry"
    ]


def test_entry_time_is_ist(world: Setup) -> None:
    world.strategy()
    scheduler = world.scheduler()
    assert scheduler.tick(datetime(2026, 12, 9, 3, 49, 59, tzinfo=UTC)).queued == []
    assert len(scheduler.tick(datetime(2026, 12, 9, 3, 50, tzinfo=UTC)).queued) == 1
    # 09:20 UTC is 14:50 IST: far beyond the grace window of a 09:20 IST entry.
    other = world.strategy(entry=time(9, 21))
    assert (
        f"sched:{other}:2026-12-09:entry"
        not in scheduler.tick(datetime(2026, 12, 9, 9, 21, tzinfo=UTC)).queued
    )


def test_no_entry_on_holidays_weekends_or_non_matching_days(world: Setup) -> None:
    world.strategy()
    world.strategy(condition="expiry")
    non_expiry = world.strategy(condition="non_expiry")
    expiry = world.strategy(condition="expiry")
    scheduler = world.scheduler()
    for day in (SAT, CHRISTMAS):
        assert scheduler.tick(ist(9, 20, day=day)).queued == []
        assert scheduler.tick(ist(12, 0, day=day)).logged == []
    wed = scheduler.tick(ist(9, 20)).queued
    assert f"sched:{non_expiry}:2026-12-09:entry" in wed and f"sched:{expiry}:2026-12-09:entry" not in wed
    assert len(wed) == 2  # the "any" one and the non_expiry one
    tue = scheduler.tick(ist(9, 20, day=TUE)).queued
    assert f"sched:{expiry}:2026-12-08:entry" in tue and f"sched:{non_expiry}:2026-12-08:entry" not in tue
    assert len(tue) == 3  # "any" and both "expiry" strategies
    # A non-matching day is not a missed entry.
    assert world.activity(ENTRY_MISSED_ACTION) == []


def test_inactive_template_and_archived_strategies_are_not_scheduled(world: Setup) -> None:
    world.strategy(is_active=False)
    world.strategy(is_template=True)
    world.strategy(archived_at=ist(8, 0, day=TUE))
    assert world.scheduler().tick(ist(9, 20)).queued == []


def test_missed_entry_beyond_grace_is_not_queued_and_logged_once(world: Setup) -> None:
    sid = world.strategy()
    report = world.scheduler().tick(ist(9, 22, 1))  # the engine came up 121 s late
    assert report.queued == [] and report.logged == [(ENTRY_MISSED_ACTION, sid)]
    assert world.scheduler().tick(ist(9, 30)).logged == []  # another restart: still once
    assert world.scheduler().tick(ist(9, 31)).queued == []
    [command] = world.commands(EXECUTE_STRATEGY)
    assert command.status == "failed" and command.token == f"sched:{sid}:2026-12-09:entry"
    assert command.error is not None and "grace" in command.error
    [row] = world.activity(ENTRY_MISSED_ACTION)
    assert row.user_id == world.user_id and f"strategy {sid}" in (row.details or "")


def test_a_strategy_created_after_its_entry_time_has_not_missed_it(world: Setup) -> None:
    sid = world.strategy(created_at=ist(11, 0))
    assert world.scheduler().tick(ist(11, 1)).logged == []
    assert world.commands(EXECUTE_STRATEGY) == []
    assert world.scheduler().tick(ist(9, 25, day=date(2026, 12, 10))).logged == [(ENTRY_MISSED_ACTION, sid)]


def test_entry_within_grace_after_a_restart_is_queued(world: Setup) -> None:
    sid = world.strategy()
    report = world.scheduler(grace=120).tick(ist(9, 22))
    assert report.queued == [f"sched:{sid}:2026-12-09:entry"]
    assert world.activity(ENTRY_MISSED_ACTION) == []


def test_exit_queued_at_exit_time_and_once(world: Setup) -> None:
    sid = world.strategy(square_off=None)
    run_id = world.open_run(sid, ist(9, 20), product="NRML")
    scheduler = world.scheduler()
    assert scheduler.tick(ist(14, 59, 59)).queued == []
    token = f"sched:{sid}:2026-12-09:exit:{run_id}"
    assert scheduler.tick(ist(15, 0)).queued == [token]
    assert scheduler.tick(ist(15, 0, 1)).queued == []
    [command] = world.commands("exit")
    assert command.payload is not None
    assert {k: command.payload[k] for k in ("scope", "reason", "run_id")} == {
        "scope": "run",
        "reason": "time_exit",
        "run_id": run_id,
    }
    assert command.token == token


def test_missed_exit_and_square_off_are_done_at_once_after_a_restart(world: Setup) -> None:
    nrml = world.strategy(square_off=None)
    nrml_run = world.open_run(nrml, ist(9, 20), product="NRML")
    mis = world.strategy()
    mis_run = world.open_run(mis, ist(9, 20))
    # The engine was down from 14:00 to 15:25: both are done on the first tick.
    queued = world.scheduler().tick(ist(15, 25)).queued
    assert sorted(queued) == sorted(
        [f"sched:{nrml}:2026-12-09:exit:{nrml_run}", f"sched:{mis}:2026-12-09:squareoff:{mis_run}"]
    )
    reasons = {c.payload["run_id"]: c.payload["reason"] for c in world.commands("exit") if c.payload}
    assert reasons == {nrml_run: "time_exit", mis_run: "square_off"}
    assert world.scheduler().tick(ist(15, 26)).queued == []


def test_missed_exit_of_the_previous_day_is_done_at_the_next_open(world: Setup) -> None:
    sid = world.strategy(square_off=None)
    run_id = world.open_run(sid, ist(9, 20, day=TUE), product="NRML")
    scheduler = world.scheduler()
    assert scheduler.tick(ist(9, 0)).queued == []  # the market is closed: wait for the open
    assert scheduler.tick(ist(9, 15)).queued == [f"sched:{sid}:2026-12-08:exit:{run_id}"]


def test_exit_then_square_off_of_an_mis_run_at_their_times(world: Setup) -> None:
    sid = world.strategy(entry=time(9, 20))
    run_id = world.open_run(sid, ist(9, 20))
    scheduler = world.scheduler()
    assert scheduler.tick(ist(9, 21)).queued == []  # the open run is the day's entry
    assert scheduler.tick(ist(15, 0)).queued == [f"sched:{sid}:2026-12-09:exit:{run_id}"]
    assert scheduler.tick(ist(15, 14, 59)).queued == []
    assert scheduler.tick(ist(15, 15)).queued == [f"sched:{sid}:2026-12-09:squareoff:{run_id}"]
    assert world.scheduler().tick(ist(15, 16)).queued == []


def test_square_off_retries_legs_in_error_and_is_due_for_a_run_holding_only_such_legs(world: Setup) -> None:
    # A run whose only MIS leg an earlier exit gave up on still holds the position: squared off, and its
    # command retries the leg (a time exit or a rule's exit leaves a leg in error to a person).
    stuck = world.strategy(exit_at=None)
    stuck_run = world.open_run(stuck, ist(9, 20), status="error")
    plain = world.strategy(exit_at=time(15, 0), square_off=None)
    plain_run = world.open_run(plain, ist(9, 20), product="NRML")
    queued = world.scheduler().tick(ist(15, 15)).queued
    assert sorted(queued) == sorted(
        [f"sched:{stuck}:2026-12-09:squareoff:{stuck_run}", f"sched:{plain}:2026-12-09:exit:{plain_run}"]
    )
    payloads = {c.payload["run_id"]: c.payload for c in world.commands("exit") if c.payload}
    assert payloads[stuck_run]["reason"] == "square_off" and payloads[stuck_run]["retry_errors"] is True
    assert payloads[plain_run]["reason"] == "time_exit" and "retry_errors" not in payloads[plain_run]


def test_square_off_time_blocks_an_entry_due_later_that_day(world: Setup) -> None:
    sid = world.strategy(entry=time(9, 20), exit_at=None, square_off=time(15, 15))
    # Even a grace window that would still send the 09:20 entry at 15:16: the square-off forbids it.
    scheduler = world.scheduler(grace=8 * 3600)
    assert scheduler.tick(ist(15, 14)).queued == [f"sched:{sid}:2026-12-09:entry"]
    other = world.strategy(entry=time(9, 20), exit_at=None, square_off=time(15, 15), description="b")
    result = scheduler.tick(ist(15, 16))
    assert result.queued == [] and result.logged == [(ENTRY_MISSED_ACTION, other)]
    failed = [c for c in world.commands(EXECUTE_STRATEGY) if c.status == "failed"]
    assert [c.token for c in failed] == [f"sched:{other}:2026-12-09:entry"]
    assert "square-off" in (failed[0].error or "")


def test_mis_warning_once_per_day_without_square_off(world: Setup) -> None:
    sid = world.strategy(square_off=None, exit_at=None)
    world.open_run(sid, ist(9, 20))
    scheduler = world.scheduler()
    assert scheduler.tick(ist(15, 19)).logged == []
    assert scheduler.tick(ist(15, 20)).logged == [(MIS_WARNING_ACTION, sid)]
    assert world.scheduler().tick(ist(15, 21)).logged == []
    [row] = world.activity(MIS_WARNING_ACTION)
    assert "MIS" in (row.details or "")


async def test_component_runs_on_its_clock_and_is_in_the_engine(
    world: Setup, db_url: str, tmp_path: Path
) -> None:
    sid = world.strategy()
    clock = FakeClock(ist(9, 20, 30))
    scheduler = Scheduler(world.database, clock=clock, interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))

    async def queued() -> bool:
        return any(c.token == f"sched:{sid}:2026-12-09:entry" for c in world.commands(EXECUTE_STRATEGY))

    try:
        await eventually_async(queued, what="the scheduled entry")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    settings = load_settings(instance_dir=tmp_path / "instance", database_url=db_url, demo=False)
    engine = build_engine(settings, world.database, market_clock=clock)
    [component] = [c for c in engine.components if c.name == "scheduler"]
    assert isinstance(component, Scheduler) and component.clock is clock
    assert component.grace == timedelta(seconds=120)


async def test_scheduled_entry_and_exit_run_through_resolution_and_the_paper_exchange(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = resolution_world(db_url, simulator_session, STRADDLE, accounts=2)
    entry_at = T0  # 10:30 IST on Wed 25 Nov 2026
    with world.database.session() as session:
        strategy = session.get(Strategy, world.strategy_id)
        assert strategy is not None
        strategy.entry_time = time(10, 30)
        strategy.exit_time = time(10, 45)
    scheduler = Scheduler(world.database, clock=world.clock)
    [token] = scheduler.tick(entry_at).queued
    [command] = [c for c in world_commands(world) if c.token == token]
    assert command.payload is not None and command.payload["source"] == "schedule"
    async with resolver_of(world) as resolver:
        assert await resolver.run_command(command.id)
    done = world.command(command.id)
    assert done.status == "done", done.error
    assert done.result is not None
    run_id = done.result["run_id"]
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert world.run(run_id).status == "active"
    assert scheduler.tick(entry_at + timedelta(seconds=30)).queued == []  # once a day

    world.clock.set(entry_at + timedelta(minutes=15))
    [exit_token] = Scheduler(world.database, clock=world.clock).tick().queued  # a restarted engine
    assert exit_token == f"sched:{world.strategy_id}:2026-11-25:exit:{run_id}"
    entry, registry = world.executor()
    exits = ExitExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=entry.config
    )
    try:
        assert await exits.process_once() == 1
    finally:
        await registry.aclose()
    run = world.run(run_id)
    assert run.status == "closed" and run.exit_reason == "time_exit"
    assert {e.status for e in world.executions(run_id)} == {"exited"}


def world_commands(world: World) -> list[EngineCommand]:
    with world.database.session_factory() as session:
        return list(session.scalars(select(EngineCommand).order_by(EngineCommand.id)).all())
