"""``algomirror …`` command line. Thin: each command delegates to its package.

Errors a user can act on (bad settings, unreachable database) print one line and exit 2; no traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from algomirror.config import Settings, SettingsError, load_settings


def fail(message: str) -> NoReturn:
    """Print ``algomirror: <message>`` to stderr and exit with status 2 (an error the user can fix)."""
    click.echo(f"algomirror: {message}", err=True)
    sys.exit(2)


def settings_or_exit(**overrides: object) -> Settings:
    """The settings from the environment with ``overrides`` applied; invalid settings exit 2 with the
    reason (see :func:`fail`)."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc))


@click.group()
@click.version_option(package_name="algomirror")
def main() -> None:
    """AlgoMirror: one options strategy on many OpenAlgo accounts."""
    from algomirror.fileperms import restrict_umask

    # Before any command creates a file: the database, its WAL/SHM, lock file and backups are owner-only.
    restrict_umask()


# --- run (web + engine + embedded paper exchange) ---------------------------------------------------


@main.command()
@click.option("--host", default=None, help="Bind address (default ALGOMIRROR_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default ALGOMIRROR_PORT or 8000).")
@click.option("--no-demo", is_flag=True, help="Do not start the paper exchange or seed demo accounts.")
def run(host: str | None, port: int | None, no_demo: bool) -> None:
    """Start the app (and, in demo mode, the in-process paper exchange) at http://HOST:PORT."""
    from algomirror.runner import serve

    overrides: dict[str, object] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if no_demo:
        overrides["demo"] = False
    serve(settings_or_exit(**overrides))


# --- db ---------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database migrations."""


def _db_url_or_exit() -> str:
    from algomirror.db.session import DatabaseUnavailable, check_connection, make_engine
    from algomirror.fileperms import make_private_dir

    settings = settings_or_exit()
    url = settings.effective_database_url
    if settings.is_sqlite:
        make_private_dir(settings.instance_dir)
    engine = make_engine(url, settings)
    try:
        check_connection(engine)
    except DatabaseUnavailable as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    return url


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the database to REVISION (default: head)."""
    from algomirror.db.migrate import upgrade_url

    upgrade_url(_db_url_or_exit(), revision)
    click.echo(f"database upgraded to {revision}")


@db.command()
@click.argument("revision", default="-1")
def downgrade(revision: str) -> None:
    """Downgrade the database to REVISION (default: one step back; 'base' empties it)."""
    from algomirror.db.migrate import downgrade_url

    downgrade_url(_db_url_or_exit(), revision)
    click.echo(f"database downgraded to {revision}")


@db.command()
def current() -> None:
    """Show the database's current revision."""
    from algomirror.db.migrate import current_revision

    click.echo(current_revision(_db_url_or_exit()) or "(empty database)")


# --- user (owned by the web foundation) -------------------------------------------------------------


@main.group()
def user() -> None:
    """Users: create one (e.g. the administrator when sign-up is closed), reset a password."""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt="Repeat password"))


def _user_database() -> tuple[Settings, object]:
    from algomirror.runner import StartupError, open_database

    settings = settings_or_exit()
    try:
        return settings, open_database(settings)
    except StartupError as exc:
        fail(str(exc))


@user.command("create")
@click.argument("username")
@click.option("--email", required=True, help="The user's email address.")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def user_create(username: str, email: str, admin: bool, password_stdin: bool) -> None:
    """Create USERNAME (the first user is always an administrator)."""
    from algomirror.db.session import Database
    from algomirror.security import make_password_hasher
    from algomirror.web.auth.service import UserError, create_user
    from algomirror.web.context import log_activity

    password = _read_password(password_stdin)
    _settings, database = _user_database()
    assert isinstance(database, Database)
    try:
        with database.session() as session:
            created = create_user(
                session,
                make_password_hasher(),
                username=username,
                email=email,
                password=password,
                admin=admin,
            )
            log_activity(session, "register", user_id=created.id, details="created with the command line")
            role = "administrator" if created.is_admin else "user"
            name = created.username
    except UserError as exc:
        fail(str(exc))
    finally:
        database.dispose()
    click.echo(f"created {role} {name}")


@user.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new password from the first line of stdin.")
def user_reset_password(username: str, password_stdin: bool) -> None:
    """Set a new password for USERNAME and sign out all of its sessions."""
    from algomirror.db.session import Database
    from algomirror.security import make_password_hasher
    from algomirror.web.auth.service import UserError, change_password, find_user
    from algomirror.web.context import log_activity

    password = _read_password(password_stdin)
    _settings, database = _user_database()
    assert isinstance(database, Database)
    try:
        with database.session() as session:
            target = find_user(session, username)
            if target is None:
                fail(f"no user named {username.strip().lower()!r}")
            change_password(session, make_password_hasher(), target, password)
            log_activity(
                session, "password_changed", user_id=target.id, details="reset with the command line"
            )
    except UserError as exc:
        fail(str(exc))
    finally:
        database.dispose()
    click.echo(f"password reset for {username.strip().lower()}; its sessions are signed out")


# --- simulator (the paper exchange, standalone) ------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", default=5000, show_default=True, type=int, help="REST port (0 = any free port).")
@click.option(
    "--ws-port", default=8765, show_default=True, type=int, help="WebSocket port (0 = any free port)."
)
@click.option("--seed", default=42, show_default=True, type=int, help="Market seed (same seed, same prices).")
@click.option("--accounts", default=3, show_default=True, type=click.IntRange(1, 1000), help="Demo API keys.")
@click.option(
    "--clock",
    type=click.Choice(["realtime", "accelerated", "manual"]),
    default="realtime",
    show_default=True,
    help="Simulated time: wall clock, SPEED x real time, or moved only by POST /sim/clock/advance.",
)
@click.option(
    "--speed", default=60.0, show_default=True, type=click.FloatRange(min=0.001), help="Accelerated x N."
)
@click.option(
    "--control/--no-control",
    default=False,
    show_default=True,
    help="Serve the /sim/ control API (it requires the token printed at start).",
)
@click.option("--no-rate-limits", is_flag=True, help="Disable OpenAlgo's per-key rate limits (benchmarks).")
@click.option(
    "--profile",
    type=click.Choice(["live-like", "openalgo-paper"]),
    default="live-like",
    show_default=True,
    help="Behave like a broker-backed OpenAlgo, or reproduce the quirks of OpenAlgo's own paper mode.",
)
@click.option(
    "--start",
    default=None,
    help="Simulated start for accelerated/manual clocks, ISO 8601 with offset "
    "(e.g. 2026-11-25T10:00:00+05:30); default now (manual: Wed 25 Nov 2026 10:30 IST).",
)
def simulator(
    host: str,
    port: int,
    ws_port: int,
    seed: int,
    accounts: int,
    clock: str,
    speed: float,
    control: bool,
    no_rate_limits: bool,
    profile: str,
    start: str | None,
) -> None:
    """Run the OpenAlgo-compatible paper exchange until Ctrl-C, printing each demo API key."""
    import asyncio
    import signal
    from datetime import datetime

    from algomirror.simulator.profiles import parse_profile
    from algomirror.simulator.ratelimit import RateLimitConfig
    from algomirror.simulator.server import Simulator, SimulatorConfig

    start_at: datetime | None = None
    if start:
        try:
            start_at = datetime.fromisoformat(start)
        except ValueError:
            fail(f"--start {start!r} is not an ISO 8601 instant")
        if start_at.tzinfo is None:
            fail("--start needs a UTC offset, e.g. +05:30")
    config = SimulatorConfig(
        start=start_at,
        host=host,
        port=port,
        ws_port=ws_port,
        seed=seed,
        accounts=accounts,
        clock=clock,  # type: ignore[arg-type]
        speed=speed,
        control=control,
        rate_limits=RateLimitConfig(enabled=not no_rate_limits),
        profile=parse_profile(profile),
    )

    async def serve_forever() -> None:
        sim = Simulator(config)
        try:
            await sim.start()
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}/{ws_port}: {exc.strerror or exc}")
        click.echo(f"paper exchange REST  {sim.rest_url}/api/v1/")
        click.echo(f"paper exchange WS    {sim.ws_url}")
        if sim.control_url:
            click.echo(f"control API          {sim.control_url}/")
            click.echo(f"control token        {sim.control_token}")
        speed_text = f" x{speed:g}" if clock == "accelerated" else ""
        click.echo(f"clock {clock}{speed_text}, seed {seed}, profile {profile}")
        for i, key in enumerate(sim.api_keys, start=1):
            click.echo(f"account {i}: apikey {key}")
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await sim.stop()
            click.echo("paper exchange stopped")

    asyncio.run(serve_forever())


# --- engine (production: its own service) -----------------------------------------------------------


@main.command("engine")
def engine_command() -> None:
    """Run the engine (account sync; later execution, risk, feeds) in the foreground until stopped.

    One engine per database: refuses to start when another holds the lock. Stops cleanly on SIGINT or
    SIGTERM.
    """
    import asyncio
    import logging
    import signal

    from algomirror.engine.factory import build_engine, quiet_http_logs
    from algomirror.engine.lock import EngineAlreadyRunning, LockLost
    from algomirror.live import build_bus
    from algomirror.runner import StartupError, configure_logging, open_database

    settings = settings_or_exit()
    configure_logging(settings)
    quiet_http_logs()
    try:
        database = open_database(settings)
    except StartupError as exc:
        fail(str(exc))
    # Redis when configured (the web processes subscribe there); without it nobody outside this process
    # could listen, and the in-process bus simply has no subscribers.
    bus = build_bus(settings)
    service = build_engine(settings, database, bus=bus)
    try:
        service.acquire_lock()
    except EngineAlreadyRunning as exc:
        database.dispose()
        fail(str(exc))

    async def main_loop() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.request_stop)
        await service.run()

    from algomirror.engine.gc_tuning import freeze_startup_heap

    freeze_startup_heap()  # start-up's objects leave the collector's full passes (engine/gc_tuning.py)

    log = logging.getLogger("algomirror.engine")
    log.info("engine started (database %s)", database.engine.url.render_as_string())
    try:
        asyncio.run(main_loop())
    except LockLost as exc:
        # Crash-only: exit non-zero so the supervisor restarts the process, which waits for the lock.
        database.dispose()
        fail(f"engine stopped: its lock was lost ({exc})")
    finally:
        bus.close()
        database.dispose()
    log.info("engine stopped")


# --- chaos (the exactly-once harness, issue 13) -------------------------------------------------------


@main.command("chaos")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of every random choice (replay).")
@click.option(
    "--cycles",
    default=96,
    show_default=True,
    type=click.IntRange(1),
    help="Strategy-account cycles (entry to flat), rounded up to whole rounds.",
)
@click.option("--accounts", default=8, show_default=True, type=click.IntRange(1, 100), help="Paper accounts.")
@click.option("--strategies", default=2, show_default=True, type=click.IntRange(1, 6), help="Strategies.")
@click.option(
    "--kill-rate",
    default=0.3,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Probability of a kill -9 of the engine in each phase of a round.",
)
@click.option(
    "--crash-rate",
    default=0.005,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Probability of the engine killing itself at each crash point it reaches.",
)
@click.option(
    "--database",
    "database_kind",
    type=click.Choice(["sqlite", "postgresql"]),
    default="sqlite",
    show_default=True,
    help="A fresh SQLite file, or a fresh database on the --postgres-url server (dropped afterwards).",
)
@click.option(
    "--postgres-url",
    default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
    show_default=True,
    help="A PostgreSQL server on which the run may create and drop its own database.",
)
@click.option("--keep", is_flag=True, help="Keep the work directory (logs, SQLite file) and the database.")
@click.option(
    "--max-seconds",
    default=None,
    type=click.FloatRange(min=10),
    help="Wall-clock cap of the run (default: 120 s + 90 s per round).",
)
def chaos_command(
    seed: int,
    cycles: int,
    accounts: int,
    strategies: int,
    kill_rate: float,
    crash_rate: float,
    database_kind: str,
    postgres_url: str,
    keep: bool,
    max_seconds: float | None,
) -> None:
    """Drive the real engine against the paper exchange through faults and kill -9s, then audit the
    exchange's ledger against AlgoMirror's records (docs/reliability.md). Exits 1 when anything was
    found, printing the command that replays the run."""
    import signal

    from algomirror.chaos.run import ChaosConfig, run

    # A SIGTERM unwinds like Ctrl-C: the engine subprocess is stopped and the run's database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = ChaosConfig(
        seed=seed,
        cycles=cycles,
        accounts=accounts,
        strategies=strategies,
        kill_rate=kill_rate,
        crash_rate=crash_rate,
        database=database_kind,
        postgres_url=postgres_url,
        keep=keep,
        max_seconds=max_seconds,
    )
    result = run(config, sys.stdout)
    sys.exit(0 if result.ok else 1)


@main.command("resume-entries")
def resume_entries_command() -> None:
    """Clear the engine's "entries halted" flag (set when a component kept crashing) once the cause is
    fixed. Exits, sync and risk never stopped; this lets new entries through again."""
    from algomirror.domain.timeutil import SystemClock
    from algomirror.engine.halts import resume_entries
    from algomirror.runner import StartupError, open_database

    settings = settings_or_exit()
    try:
        database = open_database(settings)
    except StartupError as exc:
        fail(str(exc))
    try:
        with database.session() as session:
            cleared = resume_entries(session, user_id=None, now=SystemClock().now())
    finally:
        database.dispose()
    click.echo("entries resumed" if cleared else "entries were not halted")


# The operations commands live in their own module (it imports this one's helpers when run).
from algomirror.cli_ops import backup_command, maintenance  # noqa: E402

main.add_command(maintenance)
main.add_command(backup_command)
from algomirror.cli_ops import db_stats  # noqa: E402

db.add_command(db_stats)
