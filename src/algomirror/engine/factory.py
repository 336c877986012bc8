"""Build the engine for given settings and database: its components and its single-instance lock.

Used by ``algomirror engine`` (production, foreground) and by the embedded demo (``EngineThread``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from algomirror.broker.client import Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.config import Settings
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar
from algomirror.domain.timeutil import Clock, SystemClock, clock_speed
from algomirror.engine.calendar_refresh import DEFAULT_INTERVAL as DEFAULT_CALENDAR_REFRESH
from algomirror.engine.calendar_refresh import CalendarRefresh, initial_calendar
from algomirror.engine.chain import ChainEngine
from algomirror.engine.commands import CommandProcessor
from algomirror.engine.execution import EntryExecutor
from algomirror.engine.exits import ExitExecutor
from algomirror.engine.feed_types import FeedConfig
from algomirror.engine.feeds import FeedManager
from algomirror.engine.kill_switch import KillSwitch, pnl_source
from algomirror.engine.lock import EngineLock
from algomirror.engine.maintenance_job import build_maintenance_job
from algomirror.engine.marks import DEFAULT_REST_MAX_AGE, DEFAULT_WS_MAX_AGE, MarkBook
from algomirror.engine.mirror import MirrorExecutor
from algomirror.engine.order_warmer import OrderWarmer
from algomirror.engine.reconcile import Reconciler
from algomirror.engine.resolution import StrategyResolver
from algomirror.engine.risk import RiskEngine
from algomirror.engine.scheduler import Scheduler
from algomirror.engine.service import Component, EngineService, LockLostCallback
from algomirror.engine.supertrend_rule import supertrend_rule
from algomirror.engine.sync import AccountSync, SyncConfig
from algomirror.security import SecretBox


def make_decryptor(settings: Settings) -> SecretDecryptor:
    """The API-key decryptor for ``settings``' Fernet key (raises SettingsError when it is missing)."""
    return SecretDecryptor(settings.fernet_key_value())


class SecretDecryptor:
    """Callable: Fernet token -> API key. Raises ValueError for a token the key cannot read."""

    def __init__(self, key: bytes) -> None:
        self._box = SecretBox(key)

    def __call__(self, token: str) -> str:
        return self._box.decrypt(token)


def build_account_sync(
    settings: Settings,
    database: Database,
    *,
    market_clock: Clock | None = None,
    config: SyncConfig | None = None,
    registry: ClientRegistry | None = None,
    calendar: TradingCalendar | None = None,
) -> AccountSync:
    """The account-sync component with intervals and timeouts from ``settings``, on the engine's
    client ``registry`` (its own when None) and market hours from ``calendar`` (the built-in one when
    None). With a ``market_clock`` (the demo's paper exchange) the
    sync also stamps its rows by it, so every time a page shows comes from that one clock."""
    return AccountSync(
        database,
        make_decryptor(settings),
        config=config or SyncConfig.from_settings(settings),
        clock=market_clock,
        market_clock=market_clock,
        activity_clock=SystemClock(),
        registry=registry,
        calendar=calendar,
    )


def build_command_processor(
    settings: Settings, database: Database, registry: ClientRegistry, *, owns_registry: bool = False
) -> CommandProcessor:
    """The processor of web-requested commands (``engine_commands``) on the engine's ``registry``."""
    return CommandProcessor(database, registry, make_decryptor(settings), owns_registry=owns_registry)


def build_feeds(
    settings: Settings,
    database: Database,
    registry: ClientRegistry,
    *,
    market_clock: Clock | None = None,
    bus: Any | None = None,
    marks: MarkBook | None = None,
    calendar: TradingCalendar | None = None,
) -> FeedManager:
    """The feed manager (market data, PRODUCT §7) on the engine's ``registry``, writing ``marks`` (a new
    book when None; read it back as ``.marks``) and publishing ``user:{id}:feed`` status on ``bus``;
    market hours from ``calendar`` (the built-in one when None).

    Mark ages and tick staleness are judged on the market clock; an accelerated clock (the demo's,
    with a ``speed`` attribute) stretches those limits by its speed, so "5 s old" still means five
    seconds of the user's time."""
    # A slowed clock keeps the real limits.
    speed = max(clock_speed(market_clock), 1.0)
    if marks is None:
        marks = MarkBook(ws_max_age=DEFAULT_WS_MAX_AGE * speed, rest_max_age=DEFAULT_REST_MAX_AGE * speed)
    config = replace(FeedConfig(), stale_after=FeedConfig().stale_after * speed)
    return FeedManager(
        database,
        registry,
        make_decryptor(settings),
        marks=marks,
        market_clock=market_clock,
        bus=bus,
        config=config,
        calendar=calendar,
    )


def find_component(service: EngineService, name: str) -> Component | None:
    """The service's component called ``name`` (e.g. ``"feeds"``), or None."""
    return next((c for c in service.components if c.name == name), None)


def build_engine(
    settings: Settings,
    database: Database,
    *,
    market_clock: Clock | None = None,
    sync_config: SyncConfig | None = None,
    on_lock_lost: Sequence[LockLostCallback] = (),
    bus: Any | None = None,
    calendar_refresh_interval: float = DEFAULT_CALENDAR_REFRESH,
) -> EngineService:
    """An :class:`EngineService` with every component built so far (account sync, web commands and
    strategy entries (``execute_run``) and exits (``exit``) on one engine-wide client registry whose
    orders stop when the lock is lost) and the lock for this database (PostgreSQL advisory lock, or
    ``<database file>.engine.lock`` for SQLite) with its fencing epoch; escalations of crashing
    components are recorded in ``database``.

    ``market_clock`` decides market hours and the sync's timestamps (the embedded demo passes the
    paper exchange's simulated clock); ``sync_config`` overrides the settings-derived intervals and
    timeouts (tests);
    ``on_lock_lost`` callbacks run first when the lock is lost (the client registry's ``suspend_orders``);
    ``bus`` is the live bus the feed manager publishes on (None: no live status).
    Every component that judges market hours shares ONE trading calendar, loaded from the database here
    (the built-in one, logged, when that fails) and kept current by the ``calendar_refresh`` component,
    which looks at the calendar revision every ``calendar_refresh_interval`` seconds.
    The lock is taken by ``EngineService.run``/``acquire_lock``, not here.
    """
    registry = ClientRegistry(timeouts=Timeouts.from_settings(settings))
    revision, calendar = initial_calendar(database)
    lock = EngineLock(database.engine)
    exits = ExitExecutor(
        database, registry, make_decryptor(settings), epoch=lambda: lock.epoch, market_clock=market_clock
    )
    # Market data: one MarkBook shared by the feed manager (writer) and the risk engine (reader).
    feeds = build_feeds(settings, database, registry, market_clock=market_clock, bus=bus, calendar=calendar)
    components: list[Component] = [
        build_account_sync(
            settings,
            database,
            market_clock=market_clock,
            config=sync_config,
            registry=registry,
            calendar=calendar,
        ),
        build_command_processor(settings, database, registry),
        # Journal writes carry the epoch the lock took when the service acquired it.
        # Command rows on the real clock; trading records (intents, fills, runs) on the market clock.
        EntryExecutor(
            database, registry, make_decryptor(settings), epoch=lambda: lock.epoch, market_clock=market_clock
        ),
        exits,
        # Risk rules from ticks (PRODUCT §6); a breach's exit command goes straight to ``exits``.
        RiskEngine(database, feeds.marks, exits=exits, bus=bus, clock=market_clock, calendar=calendar),
        KillSwitch(database, lambda: pnl_source(components), exits=exits, bus=bus, clock=market_clock),
        supertrend_rule(
            database, feeds, make_decryptor(settings), lambda: components, bus, market_clock, calendar
        ),
        # Broker books vs our executions at start and every minute in market hours (PRODUCT §6.8).
        Reconciler(
            database, registry, make_decryptor(settings), market_clock=market_clock, calendar=calendar
        ),
        # Mirror orders (one order to chosen accounts, and the mirror check's corrections).
        MirrorExecutor(
            database, registry, make_decryptor(settings), epoch=lambda: lock.epoch, market_clock=market_clock
        ),
        # Preview and Execute of saved strategies: resolution on the feed account, sessions and
        # square-off judged by the market clock (the demo's simulated one).
        StrategyResolver(
            database,
            registry,
            make_decryptor(settings),
            epoch=lambda: lock.epoch,
            clock=market_clock,
            calendar=calendar,
        ),
        # Scheduled entries, exits and square-offs, timed by the market clock (the demo's simulated one).
        Scheduler(
            database,
            clock=market_clock,
            grace=timedelta(seconds=settings.schedule_entry_grace_seconds),
            calendar=calendar,
        ),
        feeds,
        ChainEngine(database, feeds, registry, make_decryptor(settings), bus=bus, clock=market_clock),
        build_maintenance_job(settings, database, market_clock=market_clock),  # daily, after the close
        # Calendar edits reach every component above through the shared instance (PRODUCT §8).
        CalendarRefresh(database, calendar, revision=revision, interval=calendar_refresh_interval),
    ]
    if settings.order_warm_seconds > 0:
        # Open order connections for every account at risk: an exit's first orders pay no connect.
        components.append(OrderWarmer(database, exits, interval=settings.order_warm_seconds))
    return EngineService(
        components,
        lock=lock,
        database=database,
        on_lock_lost=(registry.suspend_orders, *on_lock_lost),
        # Shared by every component: closed by the service once all of them have stopped.
        on_stopped=(registry.aclose,),
    )


def quiet_http_logs() -> None:
    """httpx logs every request at INFO (15 lines per sync cycle of 3 accounts): keep that for DEBUG."""
    httpx_log = logging.getLogger("httpx")
    if httpx_log.level == logging.NOTSET and logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        httpx_log.setLevel(logging.WARNING)


__all__ = [
    "SecretDecryptor",
    "build_account_sync",
    "build_command_processor",
    "build_engine",
    "build_feeds",
    "find_component",
    "make_decryptor",
    "quiet_http_logs",
]
