"""One writer: the single-instance lock, its watchdog and the fencing epoch, with real faults (a killed
PostgreSQL lock connection, a replaced SQLite lock file, a second engine on the same SQLite file)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from algomirror.config import load_settings
from algomirror.db.models.engine_fence import EngineFence
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock, utcnow
from algomirror.engine.commands import CommandProcessor
from algomirror.engine.factory import build_engine
from algomirror.engine.fencing import FencedOutError, check_fence, heartbeat, take_epoch
from algomirror.engine.lock import (
    ADVISORY_LOCK_KEY,
    EngineAlreadyRunning,
    EngineLock,
    LockLost,
    sqlite_lock_path,
)
from algomirror.engine.service import EngineService, EngineThread
from tests.helpers import eventually
from tests.schema import truncate_all

START = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


@pytest.fixture
def pg_database(pg_database_url: str) -> Iterator[Database]:
    """A clean PostgreSQL database (the faults below exist only there)."""
    truncate_all(pg_database_url)
    db = Database(pg_database_url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite file of its own (the lock-file mechanism exists only there)."""
    path = tmp_path / "test.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def _stored_epoch(database: Database) -> int:
    with Session(database.engine) as s:
        value = s.scalar(select(EngineFence.epoch).where(EngineFence.id == 1))
    assert value is not None
    return int(value)


class _OrderGate:
    """Stands in for the client registry: ``suspend_orders`` makes every later order call raise."""

    def __init__(self) -> None:
        self.suspended_at: float | None = None
        self.reason: str | None = None
        self._lock = threading.Lock()

    def suspend_orders(self, reason: str) -> None:
        with self._lock:
            if self.suspended_at is None:
                self.suspended_at = time.monotonic()
                self.reason = reason

    def place_order(self) -> str:
        with self._lock:
            if self.suspended_at is not None:
                raise RuntimeError(f"orders suspended: {self.reason}")
        return "sent"


class _Idle:
    name = "idle"

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


def test_engine_lock_when_second_engine_starts_refuses(database: Database) -> None:
    first = EngineLock(database.engine)
    second = EngineLock(database.engine)
    first.acquire()
    try:
        with pytest.raises(EngineAlreadyRunning):
            second.acquire()
        assert second.epoch is None
    finally:
        first.release()
    second.acquire()  # free again once the first engine released it
    second.release()


def test_take_epoch_when_called_repeatedly_grows_by_one_each_time(database: Database) -> None:
    start = _stored_epoch(database)
    taken = []
    for n in range(4):
        with Session(database.engine) as s:
            taken.append(take_epoch(s, holder=f"test:{n}", now=utcnow()))
            s.commit()
    assert taken == [start + 1, start + 2, start + 3, start + 4]
    lock = EngineLock(database.engine, holder="host:1")
    lock.acquire()
    try:
        assert lock.epoch == start + 5 == _stored_epoch(database)
        with Session(database.engine) as s:
            row = s.get(EngineFence, 1)
            assert row is not None and row.holder == "host:1" and row.acquired_at is not None
    finally:
        lock.release()


def test_check_fence_when_newer_engine_took_the_epoch_raises_fenced_out(database: Database) -> None:
    first = EngineLock(database.engine)
    first.acquire()
    old = first.epoch
    assert old is not None
    with Session(database.engine) as s:
        check_fence(s, old)  # ours: passes
        heartbeat(s, old, utcnow())
        s.commit()
    first.release()  # as if its lock had gone; it still remembers ``old``
    second = EngineLock(database.engine)
    second.acquire()
    try:
        with Session(database.engine) as s, pytest.raises(FencedOutError):
            check_fence(s, old)
        with Session(database.engine) as s, pytest.raises(FencedOutError):
            heartbeat(s, old, utcnow())
        with Session(database.engine) as s:
            assert second.epoch is not None
            check_fence(s, second.epoch)
    finally:
        second.release()


def test_check_fence_when_a_write_holds_the_fence_takeover_waits_for_it(pg_database: Database) -> None:
    lock = EngineLock(pg_database.engine)
    lock.acquire()
    try:
        assert lock.epoch is not None
        with Session(pg_database.engine) as writer:
            check_fence(writer, lock.epoch)  # FOR SHARE, held until this transaction ends
            with Session(pg_database.engine) as takeover:
                takeover.execute(text("SET LOCAL lock_timeout = '200ms'"))
                with pytest.raises(OperationalError, match="lock timeout"):
                    take_epoch(takeover, holder="newer", now=utcnow())
                takeover.rollback()
            writer.commit()
        with Session(pg_database.engine) as takeover:
            assert take_epoch(takeover, holder="newer", now=utcnow()) == lock.epoch + 1
            takeover.commit()
    finally:
        lock.release()


def _lock_backend_pid(database: Database) -> int:
    with database.engine.connect() as conn:
        pid = conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid = CAST(:h AS oid) AND objid = CAST(:l AS oid)"
            ),
            {"h": ADVISORY_LOCK_KEY >> 32, "l": ADVISORY_LOCK_KEY & 0xFFFFFFFF},
        ).scalar_one()
    return int(pid)


def test_engine_when_lock_connection_is_terminated_stops_sending_within_a_second(
    pg_database: Database,
) -> None:
    gate = _OrderGate()
    service = EngineService(
        [_Idle()], lock=EngineLock(pg_database.engine), on_lock_lost=[gate.suspend_orders]
    )
    thread = EngineThread(service)
    thread.start()
    try:
        stale_epoch = service.epoch
        assert stale_epoch is not None and gate.place_order() == "sent"
        with pg_database.engine.connect() as admin:
            killed = admin.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": _lock_backend_pid(pg_database)}
            ).scalar()
        killed_at = time.monotonic()
        assert killed is True

        eventually(lambda: gate.suspended_at is not None, timeout=1.0, interval=0.01, what="orders suspended")
        assert gate.suspended_at is not None and gate.suspended_at - killed_at < 1.0
        with pytest.raises(RuntimeError, match="orders suspended"):
            gate.place_order()
        eventually(lambda: not thread.running, timeout=5, what="engine stopped")
        assert isinstance(thread.error, LockLost) and service.lock_lost is not None

        # A second engine takes over with a new epoch; the first engine's epoch is refused.
        second = EngineLock(pg_database.engine)
        second.acquire()
        try:
            assert second.epoch is not None and second.epoch > stale_epoch
            with Session(pg_database.engine) as s, pytest.raises(FencedOutError):
                check_fence(s, stale_epoch)
        finally:
            second.release()
    finally:
        thread.stop()


def test_engine_when_newer_epoch_is_taken_behind_its_back_stops(database: Database) -> None:
    gate = _OrderGate()
    service = EngineService([_Idle()], lock=EngineLock(database.engine), on_lock_lost=[gate.suspend_orders])
    thread = EngineThread(service)
    thread.start()
    try:
        with Session(database.engine) as s:
            take_epoch(s, holder="intruder", now=utcnow())
            s.commit()
        eventually(lambda: gate.suspended_at is not None, timeout=2, interval=0.01, what="orders suspended")
        eventually(lambda: not thread.running, timeout=5, what="engine stopped")
        assert isinstance(thread.error, LockLost) and "newer engine" in str(thread.error)
    finally:
        thread.stop()


def test_engine_lock_when_same_sqlite_file_other_instance_dir_refuses(
    tmp_path: Path, sqlite_url: str
) -> None:
    first_db, second_db = Database(sqlite_url), Database(sqlite_url)
    first = build_engine(load_settings(instance_dir=tmp_path / "one", database_url=sqlite_url), first_db)
    second = build_engine(load_settings(instance_dir=tmp_path / "two", database_url=sqlite_url), second_db)
    try:
        first.acquire_lock()
        try:
            with pytest.raises(EngineAlreadyRunning, match=r"test\.db\.engine\.lock"):
                second.acquire_lock()
            assert (tmp_path / "test.db.engine.lock").exists()
            assert not (tmp_path / "one" / "engine.lock").exists()
        finally:
            assert first.lock is not None
            first.lock.release()
        second.acquire_lock()
        assert second.lock is not None
        second.lock.release()
    finally:
        first_db.dispose()
        second_db.dispose()


def test_engine_when_sqlite_lock_file_is_replaced_stops(sqlite_url: str) -> None:
    database = Database(sqlite_url)
    gate = _OrderGate()
    lock = EngineLock(database.engine)
    service = EngineService([_Idle()], lock=lock, on_lock_lost=[gate.suspend_orders])
    thread = EngineThread(service)
    thread.start()
    try:
        assert lock.lock_path is not None
        lock.lock_path.unlink()  # an operator "cleaning up"; a second engine can now lock a new file
        intruder = EngineLock(database.engine)
        intruder.acquire()
        try:
            eventually(lambda: gate.suspended_at is not None, timeout=1.0, interval=0.01, what="suspended")
            eventually(lambda: not thread.running, timeout=5, what="engine stopped")
            assert isinstance(thread.error, LockLost)
        finally:
            intruder.release()
    finally:
        thread.stop()
        database.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:mem1?mode=memory&uri=true", None),
        ("sqlite:////srv/am/algomirror.db", Path("/srv/am/algomirror.db.engine.lock")),
        ("sqlite:///file:/srv/am/x.db?uri=true", Path("/srv/am/x.db.engine.lock")),
    ],
)
def test_sqlite_lock_path_when_given_a_url_sits_beside_the_database_file(
    url: str, expected: Path | None
) -> None:
    assert sqlite_lock_path(make_url(url)) == expected


def test_sqlite_lock_path_when_url_is_relative_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_lock_path(make_url("sqlite:///data/a.db")) == tmp_path / "data" / "a.db.engine.lock"


class _Counter:
    name = "counter"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("first run crashes")
        await stop.wait()


def test_engine_thread_when_component_crashes_restarts_it_and_stops_cleanly(database: Database) -> None:
    counter = _Counter()
    service = EngineService([counter], lock=EngineLock(database.engine))
    service.restart_delay = 0.01
    thread = EngineThread(service)
    thread.start()
    try:
        eventually(lambda: counter.runs >= 2, timeout=5, what="component restarted")
        with pytest.raises(EngineAlreadyRunning):
            EngineThread(EngineService([], lock=EngineLock(database.engine))).start()
    finally:
        thread.stop()
    assert thread.error is None and service.lock_lost is None
    again = EngineLock(database.engine)
    again.acquire()  # released on stop
    again.release()


def test_engine_when_running_writes_heartbeats_with_its_clock(database: Database) -> None:
    clock = FakeClock(START)
    lock = EngineLock(database.engine, clock=clock)
    service = EngineService([_Idle()], lock=lock)
    service.heartbeat_interval = 0.01
    thread = EngineThread(service)
    thread.start()
    try:
        later = clock.advance(timedelta(minutes=1))

        def beat_at() -> datetime | None:
            with Session(database.engine) as s:
                row = s.get(EngineFence, 1)
                assert row is not None and row.acquired_at == START
                return row.heartbeat_at if row.heartbeat_at == later else None

        eventually(beat_at, timeout=5, what="heartbeat written at the clock's time")
    finally:
        thread.stop()
    assert thread.error is None


def test_engine_when_another_sqlite_writer_blocks_the_heartbeat_keeps_running(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        instance_dir=tmp_path / "instance", database_url=sqlite_url, sqlite_busy_timeout_ms=100
    )
    database = Database(sqlite_url, settings)
    service = EngineService([_Idle()], lock=EngineLock(database.engine))
    service.heartbeat_interval = 0.01
    service.lock_check_timeout = 0.5
    thread = EngineThread(service)
    try:
        with caplog.at_level(logging.WARNING, logger="algomirror.engine.service"):
            # A long write transaction of another process (its own driver connection).
            thread.start()
            writer = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
            try:
                writer.execute("BEGIN IMMEDIATE")
                # Six failed heartbeats of 100 ms each outlast the 0.5 s check tolerance.
                eventually(
                    lambda: sum("heartbeat not written" in r.getMessage() for r in caplog.records) >= 6,
                    timeout=10,
                    what="heartbeats blocked by the writer",
                )
                assert thread.running and service.lock_lost is None
                writer.execute("ROLLBACK")
            finally:
                writer.close()
            assert thread.running and service.lock_lost is None
    finally:
        thread.stop()
        database.dispose()
    assert thread.error is None


def test_build_engine_when_lock_connection_is_terminated_suspends_the_client_registry(
    pg_database: Database, tmp_path: Path
) -> None:
    settings = load_settings(instance_dir=tmp_path / "instance", database_url=pg_database.url, demo=False)
    service = build_engine(settings, pg_database)
    [commands] = [c for c in service.components if c.name == "commands"]
    assert isinstance(commands, CommandProcessor)
    registry = commands.registry
    thread = EngineThread(service)
    thread.start()
    try:
        assert registry.orders_suspended is None
        with pg_database.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": _lock_backend_pid(pg_database)})
        eventually(
            lambda: registry.orders_suspended is not None, timeout=1.0, interval=0.01, what="suspended"
        )
        reason = registry.orders_suspended
        assert reason is not None and "lock connection" in reason
        eventually(lambda: not thread.running, timeout=15, what="engine stopped")
        assert isinstance(thread.error, LockLost)
    finally:
        thread.stop()


class _FencedWriter:
    """Writes under an epoch a newer engine has replaced: check_fence refuses it for real."""

    name = "journal-writer"

    def __init__(self, database: Database, epoch: int) -> None:
        self.database = database
        self.epoch = epoch
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1

        def write() -> None:
            with self.database.session() as s:
                check_fence(s, self.epoch)

        await asyncio.to_thread(write)
        await stop.wait()


class _Watching:
    """An idle component that records whether orders were already suspended when it was stopped."""

    name = "sync"

    def __init__(self, gate: _OrderGate) -> None:
        self.gate = gate
        self.suspended_when_stopped: bool | None = None

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.suspended_when_stopped = self.gate.suspended_at is not None


async def test_engine_when_a_component_is_fenced_out_suspends_orders_stops_everything_and_raises_lock_lost(
    database: Database,
) -> None:
    with Session(database.engine) as s:
        ours = take_epoch(s, holder="this engine", now=utcnow())
        take_epoch(s, holder="newer engine", now=utcnow())
        s.commit()
    gate = _OrderGate()
    writer, other = _FencedWriter(database, ours), _Watching(gate)
    # No lock, so no watchdog: only the component's own FencedOutError can stop this engine.
    service = EngineService([writer, other], on_lock_lost=[gate.suspend_orders])
    service.restart_delay = 0.0  # a crash would be restarted at once (and fenced out again, forever)

    with pytest.raises(LockLost, match="newer engine took over") as info:
        await asyncio.wait_for(service.run(), timeout=10)

    assert "journal-writer" in str(info.value)
    assert gate.suspended_at is not None and "newer engine" in (gate.reason or "")
    assert writer.runs == 1  # not restarted
    assert other.suspended_when_stopped is True  # orders were suspended before anything was stopped
    assert service.lock_lost is not None and service.escalated == {}


class _GroupFenced:
    """A component whose task group surfaces the fence refusal wrapped in an ExceptionGroup."""

    name = "grouped"

    async def run(self, stop: asyncio.Event) -> None:
        async def refused() -> None:
            raise FencedOutError("engine epoch 1 is stale: a newer engine (epoch 2) has taken over")

        async with asyncio.TaskGroup() as group:
            group.create_task(refused())
            group.create_task(stop.wait())


async def test_engine_when_fenced_out_inside_a_task_group_treats_it_as_lock_loss() -> None:
    gate = _OrderGate()
    service = EngineService([_GroupFenced()], on_lock_lost=[gate.suspend_orders])
    service.restart_delay = 0.0
    with pytest.raises(LockLost, match="grouped"):
        await asyncio.wait_for(service.run(), timeout=10)
    assert gate.suspended_at is not None


class _ExecutorHog:
    """A component that keeps the loop's default executor busy, as fifty exits' database calls do."""

    name = "hog"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.busy = threading.Event()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        # More blocked calls than the default executor has threads: everything queued behind them waits.
        jobs = [loop.run_in_executor(None, self.release.wait, 30.0) for _ in range(64)]
        self.busy.set()
        await stop.wait()
        self.release.set()
        await asyncio.gather(*jobs)


def test_engine_when_its_default_executor_is_saturated_still_verifies_its_lock(database: Database) -> None:
    hog = _ExecutorHog()
    service = EngineService([hog], lock=EngineLock(database.engine))
    service.lock_check_timeout = 0.5
    service.heartbeat_interval = 0.05
    thread = EngineThread(service)
    thread.start()
    try:
        assert hog.busy.wait(5)
        # Several check deadlines pass while every default-executor thread is blocked.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert service.lock_lost is None and thread.running
            hog.release.wait(0.1)
    finally:
        hog.release.set()
        thread.stop()
    assert thread.error is None and service.lock_lost is None
