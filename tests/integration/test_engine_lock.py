from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from algomirror.db.session import Database
from algomirror.engine.lock import EngineAlreadyRunning, EngineLock
from algomirror.engine.service import EngineService, EngineThread


def test_engine_lock_when_second_engine_starts_refuses(database: Database, tmp_path: Path) -> None:
    first = EngineLock(database.engine, tmp_path)
    second = EngineLock(database.engine, tmp_path)
    first.acquire()
    try:
        with pytest.raises(EngineAlreadyRunning):
            second.acquire()
    finally:
        first.release()
    second.acquire()  # free again once the first engine released it
    second.release()


class _Counter:
    name = "counter"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("first run crashes")
        await stop.wait()


def test_engine_thread_when_component_crashes_restarts_it_and_stops_cleanly(
    database: Database, tmp_path: Path
) -> None:
    from tests.helpers import eventually

    counter = _Counter()
    service = EngineService([counter], lock=EngineLock(database.engine, tmp_path))
    service.restart_delay = 0.01
    thread = EngineThread(service)
    thread.start()
    try:
        eventually(lambda: counter.runs >= 2, timeout=5, what="component restarted")
        with pytest.raises(EngineAlreadyRunning):
            EngineThread(EngineService([], lock=EngineLock(database.engine, tmp_path))).start()
    finally:
        thread.stop()
    assert thread.error is None
    again = EngineLock(database.engine, tmp_path)
    again.acquire()  # released on stop
    again.release()
