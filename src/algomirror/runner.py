"""``algomirror run``: check the database, then serve the web app with waitress.

Problems a user can fix (unreachable or un-migrated database, Redis down, port taken) stop start-up
with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from algomirror.config import Settings, redact_url
from algomirror.db.migrate import alembic_config
from algomirror.db.session import Database, DatabaseUnavailable, check_connection
from algomirror.domain.timeutil import Clock
from algomirror.fileperms import make_private_dir
from algomirror.live import LiveBus, build_bus
from algomirror.security import install_redaction

log = logging.getLogger("algomirror.runner")

# waitress worker threads. Every open live stream (Server-Sent Events, web/live.py) holds one, so the
# app caps streams at SERVER_THREADS - PAGE_THREADS: that many threads always remain for pages and posts.
SERVER_THREADS = 32
PAGE_THREADS = 8


class StartupError(Exception):
    """Start-up refused; ``str(exc)`` is the one-line reason."""


def _fail(message: str) -> NoReturn:
    print(f"algomirror: {message}", file=sys.stderr)
    sys.exit(2)


# Every record is one line in this format (control characters in its text escaped, a traceback indented
# under it: algomirror.controlchars), so a line that starts at column 0 is always a record's start.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (UTC, ISO 8601, milliseconds), ``level``,
    ``logger``, ``message``, ``pid``, ``thread`` and, when present, ``exception`` and ``stack``.

    It formats what the handler's filters left: secrets already redacted, control characters already
    escaped. Non-ASCII is written as JSON ``\\u`` escapes (``\\u20b9`` for ₹), so nothing in a line can
    reorder or break what a viewer shows; every line parses with any JSON reader (log shippers, ``jq``).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            # Rendered (and cleaned) by the redaction or control-character filter.
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


def log_formatter(settings: Settings) -> logging.Formatter:
    """The formatter of this installation's log lines: JSON in production (``settings.log_json``),
    the readable :data:`LOG_FORMAT` otherwise."""
    return JsonLogFormatter() if settings.log_json else logging.Formatter(LOG_FORMAT)


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``settings.log_level`` (JSON lines in production, readable text otherwise) with
    every configured secret redacted from records and control characters escaped (see
    :func:`~algomirror.security.install_redaction`). Does not replace handlers already configured."""
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(settings))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    # The schema check at start-up would otherwise log alembic's context chatter.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    install_redaction(settings.secret_values())


def check_schema(database: Database) -> None:
    """Raise :class:`StartupError` unless the database is at the migrations' head revision."""
    heads = set(ScriptDirectory.from_config(alembic_config(database.url)).get_heads())
    with database.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current != heads:
        where = ", ".join(sorted(current)) or "an empty database"
        raise StartupError(f"the database is not migrated ({where}); run `algomirror db upgrade` first")


def check_redis(settings: Settings) -> None:
    """Raise :class:`StartupError` (one line) when ``ALGOMIRROR_REDIS_URL`` is set but Redis does not
    answer. Later outages do not stop the app: the rate limiter falls back to process memory."""
    if not settings.redis_url:
        return
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"Redis unreachable ({redact_url(settings.redis_url)}): {reason}") from None
    finally:
        client.close()


def open_database(settings: Settings) -> Database:
    """Open and check the database. Raises :class:`StartupError` with a one-line reason."""
    if settings.is_sqlite:
        make_private_dir(settings.instance_dir)
    database = Database(settings.effective_database_url, settings)
    try:
        check_connection(database.engine)
        check_schema(database)
    except DatabaseUnavailable as exc:
        database.dispose()
        raise StartupError(str(exc)) from None
    except StartupError:
        database.dispose()
        raise
    return database


def demo_exposure_warning(settings: Settings) -> str | None:
    """A warning when the demo (whose admin password is public) listens beyond this machine."""
    if not settings.demo:
        return None
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if loopback:
        return None
    return (
        f"algomirror: WARNING: demo mode is listening on {settings.host}; its admin login is public. "
        "Set ALGOMIRROR_DEMO=false or bind to 127.0.0.1."
    )


# Stops of the in-process services, for the paths that leave before serving. Interpreter exit stops
# the thread pools that asyncio.to_thread uses BEFORE atexit handlers run, so an engine still running
# then would see its components crash on the way out: stop it first.
_started: list[Callable[[], None]] = []


def stop_embedded_services() -> None:
    """Stop whatever :func:`start_embedded_services` started (idempotent)."""
    while _started:
        _started.pop()()


def start_embedded_services(
    settings: Settings, database: Database, bus: LiveBus | None = None
) -> Clock | None:
    """Start the in-process services before the web server: the engine (account sync) where
    ``ALGOMIRROR_ENGINE_IN_PROCESS`` allows it ("auto": demo mode or SQLite; skipped with a warning when an
    ``algomirror engine`` process already serves this database), and in demo mode
    the paper exchange, the demo user and accounts (into an empty database only) and the demo orders.
    The engine publishes live updates on ``bus`` (pass the web app's).

    A port in use or another start-up problem stops with one line. Services stop at interpreter exit.
    """
    import atexit

    from algomirror.embedded import EmbeddedStartError, demo_banner, start_embedded

    try:
        services = start_embedded(settings, database, bus=bus)
    except EmbeddedStartError as exc:
        database.dispose()
        _fail(str(exc))
    atexit.register(services.stop)
    _started.append(services.stop)
    if settings.demo:
        print(demo_banner(settings, services), flush=True)
    elif services.engine_refused:
        log.warning("engine not started in this process: %s", services.engine_refused)
    elif services.engine_not_configured:
        log.info(
            "serving the web only; the engine is not started in this process (%s)",
            services.engine_not_configured,
        )
    else:
        log.info("engine started in-process (account sync)")
    return services.market_clock


def serve(settings: Settings) -> None:
    """Check the database and serve the app on ``settings.host:settings.port`` until interrupted."""
    from waitress.server import create_server

    from algomirror.web import create_app

    configure_logging(settings)
    warning = demo_exposure_warning(settings)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        check_redis(settings)
        database = open_database(settings)
    except StartupError as exc:
        _fail(str(exc))
    # One bus for the web app and an in-process engine (Redis when configured: then the engine may be
    # another process).
    bus = build_bus(settings)
    market_clock = start_embedded_services(settings, database, bus)
    app = create_app(settings, database=database, bus=bus)
    app.extensions["algomirror"].market_clock = market_clock
    app.config["LIVE_MAX_STREAMS"] = SERVER_THREADS - PAGE_THREADS
    try:
        server = create_server(
            app,
            host=settings.host,
            port=settings.port,
            threads=SERVER_THREADS,
            # Lets waitress read while a request runs, so it sees a closed connection at once and a live
            # stream can end (``waitress.client_disconnected``) instead of waiting for its next write.
            channel_request_lookahead=1,
            ident="AlgoMirror",
        )
    except OSError as exc:
        # Port taken or host not an address of this machine: one line, no traceback.
        stop_embedded_services()
        bus.close()
        database.dispose()
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    log.info("AlgoMirror listening on http://%s:%s", settings.host, settings.port)
    try:
        server.run()
    finally:
        stop_embedded_services()
        # After the engine (its last publishes), before the database: wakes any stream still waiting.
        bus.close()
        database.dispose()
