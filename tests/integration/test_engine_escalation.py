"""Crash escalation: a component that keeps crashing halts entries (durably) instead of being restarted
silently forever. Time is a fake clock moved by the component itself; no test waits for a duration."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from algomirror.db.models import ActivityLog
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.halts import COMPONENT_FAILED_ACTION, entries_halted, resume_entries
from algomirror.engine.service import EngineService
from tests.helpers import eventually_async

START = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


class _Crasher:
    """Crashes on every run after moving the fake clock by ``step``; after ``crashes`` runs it idles."""

    name = "flaky-sync"

    def __init__(self, clock: FakeClock, step: timedelta, crashes: int) -> None:
        self.clock = clock
        self.step = step
        self.crashes = crashes
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.runs > self.crashes:
            await stop.wait()
            return
        self.clock.advance(self.step)
        raise RuntimeError(f"boom {self.runs}")


def _service(database: Database, component: _Crasher, clock: FakeClock) -> EngineService:
    service = EngineService(
        [component], database=database, clock=clock, crash_limit=3, crash_window=timedelta(minutes=10)
    )
    service.restart_delay = 0
    return service


def _failures(database: Database) -> int:
    with database.session_factory() as s:
        query = (
            select(func.count()).select_from(ActivityLog).where(ActivityLog.action == COMPONENT_FAILED_ACTION)
        )
        return int(s.scalar(query) or 0)


def _halt_reason(database: Database) -> str | None:
    with database.session_factory() as s:
        return entries_halted(s)


async def _run_until(service: EngineService, done: Callable[[], bool], what: str) -> None:
    task = asyncio.create_task(service.run())

    async def check() -> bool:
        assert not task.done(), "the service stopped on its own"
        return done()

    try:
        await eventually_async(check, timeout=10, what=what)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, timeout=10)


def test_engine_service_when_component_crashes_limit_times_in_window_halts_entries(
    database: Database,
) -> None:
    clock = FakeClock(START)
    crasher = _Crasher(clock, timedelta(seconds=30), crashes=10)
    service = _service(database, crasher, clock)
    service.escalated_restart_delay = 3600  # never reached: stop comes first

    asyncio.run(_run_until(service, lambda: crasher.name in service.escalated, "escalated"))

    assert crasher.runs == 3  # not restarted after the third crash within the window
    assert _failures(database) == 1
    reason = _halt_reason(database)
    assert reason is not None and "flaky-sync crashed 3 times" in reason and "boom 3" in reason
    with database.session_factory() as s:
        row = s.scalars(select(ActivityLog).where(ActivityLog.action == COMPONENT_FAILED_ACTION)).one()
        assert row.timestamp == START + timedelta(seconds=90) and row.user_id is None


def test_engine_service_when_crashes_are_spread_beyond_the_window_keeps_restarting_silently(
    database: Database,
) -> None:
    clock = FakeClock(START)
    crasher = _Crasher(clock, timedelta(minutes=6), crashes=8)  # at most 2 crashes in any 10 minutes
    service = _service(database, crasher, clock)

    asyncio.run(_run_until(service, lambda: crasher.runs > 8, "all crashes restarted"))

    assert service.escalated == {} and _failures(database) == 0 and _halt_reason(database) is None


def test_engine_service_when_escalated_component_crashes_again_restarts_it_without_new_records(
    database: Database,
) -> None:
    clock = FakeClock(START)
    crasher = _Crasher(clock, timedelta(seconds=1), crashes=7)
    service = _service(database, crasher, clock)
    service.escalated_restart_delay = 0  # the long backoff, shortened: it is the restart that matters

    asyncio.run(_run_until(service, lambda: crasher.runs > 7, "restarted after escalation"))

    assert _failures(database) == 1  # one escalation, not one per crash
    assert _halt_reason(database) is not None


def test_resume_entries_when_halted_clears_the_flag_and_logs_it(database: Database) -> None:
    clock = FakeClock(START)
    crasher = _Crasher(clock, timedelta(seconds=1), crashes=3)
    service = _service(database, crasher, clock)
    asyncio.run(_run_until(service, lambda: crasher.name in service.escalated, "escalated"))

    with database.session() as s:
        assert resume_entries(s, user_id=None, now=START) is True
    with database.session() as s:
        assert resume_entries(s, user_id=None, now=START) is False
    assert _halt_reason(database) is None
    with database.session_factory() as s:
        resumed = s.scalars(
            select(ActivityLog.details).where(ActivityLog.action == "engine_entries_resumed")
        ).one()
    assert resumed is not None and "flaky-sync crashed 3 times" in resumed


async def test_service_when_stopped_closes_shared_resources_after_every_component() -> None:
    events: list[str] = []

    class Slow:
        name = "slow"

        async def run(self, stop: asyncio.Event) -> None:
            await stop.wait()
            await asyncio.sleep(0)  # still shutting down when a faster sibling has returned
            events.append("slow stopped")

    class Fast:
        name = "fast"

        async def run(self, stop: asyncio.Event) -> None:
            await stop.wait()
            events.append("fast stopped")

    async def close_registry() -> None:
        events.append("registry closed")

    service = EngineService([Fast(), Slow()], on_stopped=[close_registry])
    running = asyncio.create_task(service.run())

    async def started() -> bool:
        return service._stop is not None

    await eventually_async(started, what="service started")
    service.request_stop()
    await asyncio.wait_for(running, timeout=10)

    assert events[-1] == "registry closed" and sorted(events[:2]) == ["fast stopped", "slow stopped"]
