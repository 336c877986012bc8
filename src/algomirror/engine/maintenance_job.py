"""The engine's daily housekeeping (PRODUCT §8 jobs): maintenance after the close, and an optional backup.

Once per IST day, at or after ``run_at`` (IST wall time on the market clock, 16:00 by default: after the
equity close at 15:30), the job runs :func:`algomirror.db.maintenance.run_maintenance` with the
installation's retention settings, then — when enabled — a backup into the backup folder, pruned to the
newest ``backup_keep``. Every day counts, trading day or not: housekeeping is harmless on a holiday.

The IST date of the last run is stored in ``app_settings`` (``maintenance_last_run``,
``backup_last_run``), so an engine restarted later the same day does not run it twice. A failed run is
logged and retried after ``retry_after`` seconds; the day is recorded only once it succeeded (a failed
backup is recorded too, so a broken backup folder is reported once a day, not every minute).

Options without a Settings field are read from the environment when the engine is built:
``ALGOMIRROR_MAINTENANCE_AT`` (HH:MM IST, or ``off``), ``ALGOMIRROR_DAILY_BACKUP`` (true/false),
``ALGOMIRROR_BACKUP_DIR`` and ``ALGOMIRROR_BACKUP_KEEP`` (the last two as for ``algomirror backup``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from algomirror.config import Settings, SettingsError
from algomirror.db.backup import BackupError, backup, prune_backups
from algomirror.db.maintenance import MaintenancePolicy, MaintenanceReport, run_maintenance
from algomirror.db.models.app_settings import AppSetting
from algomirror.db.session import Database
from algomirror.domain.timeutil import Clock, SystemClock, ist_today, to_ist

log = logging.getLogger(__name__)

MAINTENANCE_LAST_RUN = "maintenance_last_run"
BACKUP_LAST_RUN = "backup_last_run"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class MaintenanceJobConfig:
    """When the job runs (``run_at``, IST wall time), with which retention, and the optional backup
    (folder, how many to keep). ``poll_seconds`` is how often it looks at the clock; ``retry_after``
    (seconds) how long it waits after a failed run."""

    backup_dir: Path
    run_at: time = time(16, 0)
    policy: MaintenancePolicy = field(default_factory=MaintenancePolicy)
    backup_enabled: bool = False
    backup_keep: int = 14
    poll_seconds: float = 60.0
    retry_after: float = 900.0
    # The first look waits this long after the engine starts: start-up (sync, reconciliation) comes
    # first, and an engine that runs only briefly (a test, a restart loop) never does housekeeping.
    start_delay: float = 120.0
    enabled: bool = True

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> MaintenanceJobConfig:
        """Retention from ``settings``; the run time and backup options from ``environ`` (default
        ``os.environ``). Raises SettingsError naming the variable with a bad value."""
        env = os.environ if environ is None else environ
        run_at = time(16, 0)
        raw_at = env.get("ALGOMIRROR_MAINTENANCE_AT", "").strip()
        enabled = raw_at.lower() != "off"
        if raw_at and enabled:
            try:
                run_at = time.fromisoformat(raw_at)
            except ValueError:
                raise SettingsError(
                    f"ALGOMIRROR_MAINTENANCE_AT={raw_at!r} is not a time HH:MM (IST)"
                ) from None
        raw_backup = env.get("ALGOMIRROR_DAILY_BACKUP", "").strip().lower()
        if raw_backup not in _TRUE | _FALSE:
            raise SettingsError(f"ALGOMIRROR_DAILY_BACKUP={raw_backup!r} is not true or false")
        raw_keep = env.get("ALGOMIRROR_BACKUP_KEEP", "").strip() or "14"
        if not raw_keep.isdigit() or int(raw_keep) < 1:
            raise SettingsError(f"ALGOMIRROR_BACKUP_KEEP={raw_keep!r} is not a whole number of at least 1")
        raw_dir = env.get("ALGOMIRROR_BACKUP_DIR", "").strip()
        return cls(
            backup_dir=Path(raw_dir) if raw_dir else settings.instance_dir / "backups",
            run_at=run_at,
            policy=MaintenancePolicy(
                activity_days=settings.activity_retention_days,
                archive_days=settings.order_archive_days,
                session_idle_hours=settings.session_idle_hours,
            ),
            backup_enabled=raw_backup in _TRUE,
            backup_keep=int(raw_keep),
            enabled=enabled,
        )


@dataclass(frozen=True)
class JobOutcome:
    """What one :meth:`MaintenanceJob.step` did: the IST day it ran for, the maintenance report (None when
    it had already run that day), and the backup written (None: not enabled, not due, or failed)."""

    day: date
    report: MaintenanceReport | None
    backup: Path | None


class MaintenanceJob:
    """Engine component ``maintenance``: see the module docstring.

    ``clock`` (the market clock; the demo's simulated one) decides when the day's run is due;
    ``wall_clock`` gives the instant the retention windows count back from (the real one by default).
    """

    name = "maintenance"

    def __init__(
        self,
        database: Database,
        config: MaintenanceJobConfig,
        *,
        clock: Clock | None = None,
        wall_clock: Clock | None = None,
    ) -> None:
        self.database = database
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.wall_clock: Clock = wall_clock or SystemClock()
        self.url = database.url

    async def run(self, stop: asyncio.Event) -> None:
        """After ``start_delay``, look at the clock every ``poll_seconds`` until ``stop``; run the day's job
        when due. Returns at once (after ``stop``) when the job is disabled."""
        if not self.config.enabled:
            log.info("daily maintenance is off (ALGOMIRROR_MAINTENANCE_AT=off)")
            await stop.wait()
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=self.config.start_delay)
        except TimeoutError:
            pass
        while not stop.is_set():
            wait = self.config.poll_seconds
            try:
                await asyncio.to_thread(self.step)
            except (SQLAlchemyError, OSError) as exc:
                # Nothing recorded for the day: it is tried again after the pause.
                log.error("daily maintenance failed (retrying in %gs): %s", self.config.retry_after, exc)
                wait = self.config.retry_after
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    def due_day(self, now: datetime) -> date | None:
        """The IST day whose run is due at ``now`` (aware), or None: before ``run_at`` or already done."""
        if to_ist(now).time() < self.config.run_at:
            return None
        day = ist_today(now)
        return None if self._last(MAINTENANCE_LAST_RUN) == day else day

    def step(self) -> JobOutcome | None:
        """Run the day's maintenance (and backup) if due now; None when not due. Raises SQLAlchemyError
        when the database fails (the day is then not recorded)."""
        day = self.due_day(self.clock.now())
        if day is None:
            return None
        report = run_maintenance(self.database, self.wall_clock.now(), self.config.policy)
        for line in report.lines(self.config.policy):
            log.info("daily maintenance: %s", line)
        self._record(MAINTENANCE_LAST_RUN, day)
        written: Path | None = None
        if self.config.backup_enabled and self._last(BACKUP_LAST_RUN) != day:
            written = self._backup()
            self._record(BACKUP_LAST_RUN, day)
        return JobOutcome(day, report, written)

    def _backup(self) -> Path | None:
        try:
            path = backup(self.url, self.config.backup_dir, self.wall_clock.now())
            removed = prune_backups(self.config.backup_dir, self.config.backup_keep)
        except (BackupError, OSError) as exc:
            log.error("daily backup failed: %s", exc)
            return None
        log.info("daily backup written: %s (pruned %d older)", path, len(removed))
        return path

    def _last(self, key: str) -> date | None:
        with self.database.session_factory() as session:
            value = session.scalar(select(AppSetting.value).where(AppSetting.key == key))
        if value is None:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            log.warning("app_settings %s=%r is not a date; treating it as never run", key, value)
            return None

    def _record(self, key: str, day: date) -> None:
        with self.database.session() as session:
            row = session.scalar(select(AppSetting).where(AppSetting.key == key))
            if row is None:
                session.add(AppSetting(key=key, value=day.isoformat()))
            else:
                row.value = day.isoformat()


def build_maintenance_job(
    settings: Settings, database: Database, *, market_clock: Clock | None = None
) -> MaintenanceJob:
    """The daily maintenance component for ``settings`` (see :class:`MaintenanceJobConfig.from_settings`;
    raises SettingsError for a bad environment value)."""
    return MaintenanceJob(database, MaintenanceJobConfig.from_settings(settings), clock=market_clock)


__all__ = [
    "BACKUP_LAST_RUN",
    "MAINTENANCE_LAST_RUN",
    "JobOutcome",
    "MaintenanceJob",
    "MaintenanceJobConfig",
    "build_maintenance_job",
]
