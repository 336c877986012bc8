"""The engine's daily maintenance job, stepped with a fake clock (no sleeps): due only after its IST time,
once per IST day, also across a restart (a new job on the same database), and its optional backup."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from algomirror.config import SettingsError, load_settings
from algomirror.db.models import ActivityLog
from algomirror.db.models.app_settings import AppSetting
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.maintenance_job import (
    BACKUP_LAST_RUN,
    MAINTENANCE_LAST_RUN,
    MaintenanceJob,
    MaintenanceJobConfig,
)

# Tue 1 Dec 2026, 15:59 IST (10:29 UTC): one minute before the job's default 16:00 IST.
BEFORE = datetime(2026, 12, 1, 10, 29, tzinfo=UTC)


def _old_log(database: Database, action: str) -> None:
    with database.session() as session:
        session.add(ActivityLog(action=action, timestamp=datetime(2026, 1, 1, tzinfo=UTC)))


def _job(database: Database, clock: FakeClock, tmp_path: Path, *, backups: bool = False) -> MaintenanceJob:
    config = MaintenanceJobConfig(backup_dir=tmp_path / "bk", backup_enabled=backups, backup_keep=2)
    return MaintenanceJob(database, config, clock=clock, wall_clock=clock)


def test_step_when_after_close_runs_once_per_ist_day_also_across_restart(
    database: Database, tmp_path: Path
) -> None:
    clock = FakeClock(BEFORE)
    _old_log(database, "old-1")
    job = _job(database, clock, tmp_path)

    assert job.step() is None  # 15:59 IST: not yet
    clock.advance(timedelta(minutes=1))
    outcome = job.step()
    assert outcome is not None and outcome.report is not None
    assert outcome.report.activity_logs == 1
    assert outcome.day.isoformat() == "2026-12-01"
    assert outcome.backup is None  # not enabled

    _old_log(database, "old-2")
    clock.advance(timedelta(hours=2))
    assert job.step() is None  # same IST day
    restarted = _job(database, clock, tmp_path)
    assert restarted.step() is None  # the day is recorded in the database, not in the process
    # 23:59 IST is still 1 Dec; 00:01 IST on 2 Dec (18:31 UTC) is before 16:00: not due either.
    clock.set(datetime(2026, 12, 1, 18, 29, tzinfo=UTC))
    assert restarted.step() is None
    clock.set(datetime(2026, 12, 1, 18, 31, tzinfo=UTC))
    assert restarted.step() is None

    clock.set(datetime(2026, 12, 2, 10, 30, tzinfo=UTC))  # 16:00 IST on 2 Dec
    second = restarted.step()
    assert second is not None and second.report is not None
    assert second.report.activity_logs == 1
    with database.session_factory() as session:
        stored = session.scalar(select(AppSetting.value).where(AppSetting.key == MAINTENANCE_LAST_RUN))
    assert stored == "2026-12-02"


def test_step_when_backup_enabled_writes_one_a_day_and_keeps_the_newest(
    sqlite_template: Path, tmp_path: Path
) -> None:
    # One kind is enough here: backups of both kinds are tested in test_backup.py.
    db_file = tmp_path / "app.db"
    db_file.write_bytes(sqlite_template.read_bytes())
    database = Database(f"sqlite:///{db_file}")
    try:
        _backup_days(database, tmp_path)
    finally:
        database.dispose()


def _backup_days(database: Database, tmp_path: Path) -> None:
    clock = FakeClock(BEFORE + timedelta(minutes=1))
    job = _job(database, clock, tmp_path, backups=True)
    written = []
    for _day in range(3):
        outcome = job.step()
        assert outcome is not None and outcome.backup is not None
        written.append(outcome.backup)
        assert job.step() is None
        clock.advance(timedelta(days=1))

    assert sorted(p.name for p in (tmp_path / "bk").iterdir()) == sorted(p.name for p in written[1:])
    with database.session_factory() as session:
        stored = session.scalar(select(AppSetting.value).where(AppSetting.key == BACKUP_LAST_RUN))
    assert stored == "2026-12-03"


def test_run_when_stopped_returns_and_has_run_the_due_step(database: Database, tmp_path: Path) -> None:
    clock = FakeClock(BEFORE + timedelta(minutes=1))
    _old_log(database, "old")
    config = MaintenanceJobConfig(backup_dir=tmp_path / "bk", start_delay=0.0)
    job = MaintenanceJob(database, config, clock=clock, wall_clock=clock)

    async def drive() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(job.run(stop))
        deadline = asyncio.get_running_loop().time() + 10
        while job._last(MAINTENANCE_LAST_RUN) is None:
            assert asyncio.get_running_loop().time() < deadline, "the job never ran"
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(drive())
    with database.session_factory() as session:
        assert session.scalar(select(ActivityLog.id)) is None


def test_config_from_environment_when_values_bad_names_the_variable(tmp_path: Path) -> None:
    settings = load_settings(instance_dir=tmp_path)
    config = MaintenanceJobConfig.from_settings(
        settings, {"ALGOMIRROR_MAINTENANCE_AT": "17:30", "ALGOMIRROR_DAILY_BACKUP": "true"}
    )
    assert (config.run_at, config.backup_enabled, config.backup_keep) == (time(17, 30), True, 14)
    assert config.backup_dir == tmp_path / "backups"
    assert config.policy.activity_days == settings.activity_retention_days
    assert config.enabled and config.start_delay > 0
    assert not MaintenanceJobConfig.from_settings(settings, {"ALGOMIRROR_MAINTENANCE_AT": "off"}).enabled
    for env, name in (
        ({"ALGOMIRROR_MAINTENANCE_AT": "25:00"}, "ALGOMIRROR_MAINTENANCE_AT"),
        ({"ALGOMIRROR_DAILY_BACKUP": "sometimes"}, "ALGOMIRROR_DAILY_BACKUP"),
        ({"ALGOMIRROR_BACKUP_KEEP": "0"}, "ALGOMIRROR_BACKUP_KEEP"),
    ):
        with pytest.raises(SettingsError, match=name):
            MaintenanceJobConfig.from_settings(settings, env)
