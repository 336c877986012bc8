"""The WSGI entry for gunicorn: ``gunicorn -c deploy/gunicorn.conf.py algomirror.wsgi:app``.

``app`` is built on first access (module ``__getattr__``), so importing this module opens nothing: each
gunicorn worker (``preload_app`` off) builds its own app with its own database pool. It serves the web
only; the engine runs as ``algomirror engine``, its own service (one per database).

Start-up does what ``algomirror run`` does before serving: settings (production mode's checks
included), logging, Redis, database reachable and migrated. A refusal is one line on stderr,
``algomirror: <reason>``, and exit status 4, which gunicorn takes as "App failed to load": it stops
instead of restarting workers that cannot start.
"""

from __future__ import annotations

import atexit
import logging
import sys
from typing import Any, NoReturn

from flask import Flask

from algomirror.config import SettingsError, load_settings
from algomirror.fileperms import restrict_umask
from algomirror.live import build_bus
from algomirror.runner import (
    PAGE_THREADS,
    SERVER_THREADS,
    StartupError,
    check_redis,
    configure_logging,
    open_database,
)

log = logging.getLogger("algomirror.wsgi")

# gunicorn.arbiter.Arbiter.APP_LOAD_ERROR: the arbiter halts rather than respawning the worker.
APP_LOAD_ERROR = 4

_app: Flask | None = None


def build_app(threads: int = SERVER_THREADS) -> Flask:
    """Build the web app from the environment for a WSGI server running ``threads`` threads per
    process (live streams are capped at ``threads - PAGE_THREADS``, so pages always get a thread).

    Raises :class:`~algomirror.config.SettingsError` (invalid or, in production, missing settings) or
    :class:`~algomirror.runner.StartupError` (Redis or the database unreachable, schema not migrated),
    each with a one-line reason.
    """
    from algomirror.web import create_app

    # As every `algomirror` command: what this process creates (SQLite files, backups) is owner-only.
    restrict_umask()
    settings = load_settings()
    configure_logging(settings)
    check_redis(settings)
    database = open_database(settings)
    # Redis when configured: the engine (another process) publishes there.
    bus = build_bus(settings)
    app = create_app(settings, database=database, bus=bus)
    app.config["LIVE_MAX_STREAMS"] = max(1, threads - PAGE_THREADS)

    def close() -> None:
        bus.close()
        database.dispose()

    atexit.register(close)
    if settings.runs_engine_in_process:
        log.warning("the WSGI entry serves the web only: run `algomirror engine` as its own service")
    log.info("AlgoMirror web worker ready (%s mode)", settings.env)
    return app


def _app_or_exit() -> Flask:
    try:
        return build_app()
    except (SettingsError, StartupError) as exc:
        _refuse(str(exc))


def _refuse(message: str) -> NoReturn:
    print(f"algomirror: {message}", file=sys.stderr, flush=True)
    sys.exit(APP_LOAD_ERROR)


def __getattr__(name: str) -> Any:
    # PEP 562: ``algomirror.wsgi.app`` is built when gunicorn looks it up, once per process.
    global _app
    if name == "app":
        if _app is None:
            _app = _app_or_exit()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["APP_LOAD_ERROR", "build_app"]
