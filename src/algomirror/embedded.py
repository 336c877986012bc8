"""The embedded mode of ``algomirror run``: paper exchange + demo data + engine inside the web process.

:func:`start_embedded` (demo mode) starts, in order:

1. the paper exchange on ``settings.demo_sim_port`` / ``demo_sim_ws_port`` in a daemon thread, bound to
   loopback only, control API on behind a random token that never leaves this process (not printed, not
   in a page), deterministic API keys from ``settings.simulator_seed``, and an accelerated clock
   (``settings.demo_clock_speed``) that starts at 09:20 IST of the most recent trading day. When the
   simulated session nears its close the clock jumps to 09:20 of the next trading day, so prices keep
   moving whatever the real time is;
2. the demo user and three demo accounts, only when the database has no users;
3. the demo orders on each paper account (every start: the exchange keeps its books in memory);
4. the engine (account sync) on its own thread, its market hours following the simulated clock.

Outside demo mode it starts only the engine. The engine is started only where the settings say so
(``ALGOMIRROR_ENGINE_IN_PROCESS``; "auto" = demo mode or SQLite): with PostgreSQL in production the
engine runs as ``algomirror engine`` and ``run`` serves the web only. :meth:`EmbeddedServices.stop`
stops what was started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from algomirror.config import Settings
from algomirror.db.session import Database
from algomirror.demo import (
    DEMO_ACCOUNT_NAMES,
    DemoOrders,
    SeededDemo,
    demo_start_instant,
    next_demo_session,
    place_demo_orders,
    seed_demo,
)
from algomirror.domain.calendar import default_calendar
from algomirror.domain.timeutil import Clock, ist_combine, to_ist, utcnow
from algomirror.engine.factory import build_engine, quiet_http_logs
from algomirror.engine.lock import EngineAlreadyRunning
from algomirror.engine.service import EngineThread
from algomirror.engine.sync import SyncConfig
from algomirror.live import LiveBus
from algomirror.simulator.core import SimulatorCore
from algomirror.simulator.server import RunningSimulator, SimulatorConfig, start_in_thread

log = logging.getLogger(__name__)

# The demo clock leaves a session this long before its close (IST 15:25), skipping the quiet end.
WRAP_BEFORE_CLOSE = timedelta(minutes=5)


class EmbeddedStartError(Exception):
    """The embedded services could not start; ``str(exc)`` is a one-line reason."""


class SimulatedClock:
    """A :class:`~algomirror.domain.timeutil.Clock` reading the paper exchange's simulated time, which
    runs ``speed`` times faster than the wall clock (ages on it are divided by that to judge staleness)."""

    def __init__(self, core: SimulatorCore, speed: float = 1.0) -> None:
        self._core = core
        self.speed = speed

    def now(self) -> datetime:
        """The exchange's simulated instant (aware UTC)."""
        return self._core.market.now()


@dataclass
class EmbeddedServices:
    """What :func:`start_embedded` started. ``stop`` is idempotent."""

    simulator: RunningSimulator | None = None
    engine: EngineThread | None = None
    seeded: SeededDemo | None = None
    demo_orders: DemoOrders = field(default_factory=DemoOrders)
    engine_refused: str | None = None
    # Why no engine was started here by configuration (None when one was tried).
    engine_not_configured: str | None = None
    # The paper exchange's simulated clock in demo mode (the web shows market hours by it).
    market_clock: Clock | None = None

    def stop(self) -> None:
        """Stop the engine, then the paper exchange (whichever were started)."""
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.stop()
        simulator, self.simulator = self.simulator, None
        if simulator is not None:
            simulator.stop()


async def _wrap_sessions(core: SimulatorCore, rest_url: str, check_every: float) -> None:
    """Runs on the exchange's loop: jump the demo clock to the next session before the close, then put
    the resting demo orders back (a new paper session cancels open orders; NRML positions carry)."""
    calendar = default_calendar()
    while True:
        await asyncio.sleep(check_every)
        try:
            now = core.market.now()
            bounds = calendar.session_bounds("NSE", to_ist(now).date())
            close = bounds[1] if bounds is not None else ist_combine(to_ist(now).date(), datetime.min.time())
            if now >= close - WRAP_BEFORE_CLOSE:
                target = next_demo_session(now, calendar)
                core.jump((target - now).total_seconds())
                log.info("demo market moved on to the next session (%s)", target.isoformat())
                await place_demo_orders(
                    rest_url, list(core.api_keys), to_ist(target).date(), resting_only=True
                )
        except Exception:
            log.exception("demo market could not move to the next session")


def start_simulator(
    settings: Settings, *, wrap_check_seconds: float = 15.0, start: datetime | None = None
) -> RunningSimulator:
    """Start the demo paper exchange; its clock starts at ``start`` (default :func:`demo_start_instant`
    of now). Raises :class:`EmbeddedStartError` (e.g. a port in use)."""
    config = SimulatorConfig(
        # Loopback only: the app's own process is the exchange's only client. The control token is
        # generated at start and stays in ``running.control_token``.
        host="127.0.0.1",
        port=settings.demo_sim_port,
        ws_port=settings.demo_sim_ws_port,
        seed=settings.simulator_seed,
        accounts=len(DEMO_ACCOUNT_NAMES),
        clock="accelerated",
        speed=settings.demo_clock_speed,
        start=start or demo_start_instant(utcnow()),
        control=True,
    )
    try:
        running = start_in_thread(config)
    except OSError as exc:
        raise EmbeddedStartError(
            "cannot start the demo paper exchange on ports "
            f"{settings.demo_sim_port}/{settings.demo_sim_ws_port} ({exc.strerror or exc}); set "
            "ALGOMIRROR_DEMO_SIM_PORT / ALGOMIRROR_DEMO_SIM_WS_PORT or use --no-demo"
        ) from None
    asyncio.run_coroutine_threadsafe(
        _wrap_sessions(running.core, running.rest_url, wrap_check_seconds), running.loop
    )
    return running


def _seed(settings: Settings, database: Database, running: RunningSimulator) -> SeededDemo | None:
    from algomirror.security import SecretBox, make_password_hasher

    box = SecretBox(settings.fernet_key_value())
    with database.session() as session:
        return seed_demo(
            session,
            settings,
            host_url=running.rest_url,
            ws_url=running.ws_url,
            api_keys=running.api_keys,
            encrypt=box.encrypt,
            hasher=make_password_hasher(),
        )


def start_embedded(
    settings: Settings,
    database: Database,
    *,
    sync_config: SyncConfig | None = None,
    wrap_check_seconds: float = 15.0,
    bus: LiveBus | None = None,
) -> EmbeddedServices:
    """Start the embedded services (see the module docstring); the engine publishes live updates on
    ``bus`` (the web app's: one instance for both). Raises :class:`EmbeddedStartError`."""
    services = EmbeddedServices()
    market_clock = None
    quiet_http_logs()
    try:
        if settings.demo:
            running = start_simulator(settings, wrap_check_seconds=wrap_check_seconds)
            services.simulator = running
            market_clock = SimulatedClock(running.core, settings.demo_clock_speed)
            services.market_clock = market_clock
            services.seeded = _seed(settings, database, running)
            services.demo_orders = asyncio.run(
                place_demo_orders(
                    running.rest_url, running.api_keys, to_ist(running.core.market.now()).date()
                )
            )
        if settings.runs_engine_in_process:
            _start_engine(settings, database, services, market_clock, sync_config, bus)
        else:
            services.engine_not_configured = (
                f"ALGOMIRROR_ENGINE_IN_PROCESS={settings.engine_in_process} with "
                f"{'SQLite' if settings.is_sqlite else 'PostgreSQL'}; "
                "run `algomirror engine` as its own service"
            )
    except BaseException:
        with contextlib.suppress(Exception):
            services.stop()
        raise
    return services


def _start_engine(
    settings: Settings,
    database: Database,
    services: EmbeddedServices,
    market_clock: Clock | None,
    sync_config: SyncConfig | None,
    bus: LiveBus | None,
) -> None:
    service = build_engine(settings, database, market_clock=market_clock, sync_config=sync_config, bus=bus)
    engine = EngineThread(service)
    try:
        engine.start()
    except EngineAlreadyRunning as exc:
        # Another engine (``algomirror engine``) serves this database: the web still runs.
        services.engine_refused = str(exc)
        log.warning("embedded engine not started: %s", exc)
    else:
        services.engine = engine


def demo_banner(settings: Settings, services: EmbeddedServices) -> str:
    """The start-up lines printed in demo mode: where to sign in, and what runs."""
    lines = [f"AlgoMirror demo: open http://{settings.host}:{settings.port}/"]
    lines.append(
        f"  sign in as {settings.demo_username!r} with password {settings.demo_password.get_secret_value()!r}"
        + ("" if services.seeded else " (if you have not changed it)")
    )
    if services.simulator is not None:
        now = to_ist(services.simulator.core.market.now())
        lines.append(
            f"  paper exchange: {services.simulator.rest_url} (WebSocket {services.simulator.ws_url}), "
            f"market clock {now:%a %d %b %Y %H:%M} IST ×{settings.demo_clock_speed:g}"
        )
    lines.append(
        f"  demo orders placed: {len(services.demo_orders.placed)}; "
        f"not placed: {len(services.demo_orders.failed)}"
    )
    if services.engine_refused:
        lines.append(f"  engine: not started here ({services.engine_refused})")
    elif services.engine_not_configured:
        lines.append(f"  engine: not started here ({services.engine_not_configured})")
    return "\n".join(lines)


__all__ = [
    "EmbeddedServices",
    "EmbeddedStartError",
    "SimulatedClock",
    "demo_banner",
    "start_embedded",
    "start_simulator",
]
