"""``algomirror run``: check the database, then serve the web app with waitress.

Problems a user can fix (unreachable or un-migrated database) stop start-up with one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from algomirror.config import Settings
from algomirror.db.migrate import alembic_config
from algomirror.db.session import Database, DatabaseUnavailable, check_connection
from algomirror.web.security import install_redaction

log = logging.getLogger("algomirror.runner")


class StartupError(Exception):
    """Start-up refused; ``str(exc)`` is the one-line reason."""


def _fail(message: str) -> NoReturn:
    print(f"algomirror: {message}", file=sys.stderr)
    sys.exit(2)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The schema check at start-up would otherwise log alembic's context chatter.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    install_redaction(
        [
            settings.secret_key_value(),
            settings.fernet_key_value().decode(),
            settings.demo_password.get_secret_value(),
        ]
    )


def check_schema(database: Database) -> None:
    """Raise :class:`StartupError` unless the database is at the migrations' head revision."""
    heads = set(ScriptDirectory.from_config(alembic_config(database.url)).get_heads())
    with database.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current != heads:
        where = ", ".join(sorted(current)) or "an empty database"
        raise StartupError(f"the database is not migrated ({where}); run `algomirror db upgrade` first")


def open_database(settings: Settings) -> Database:
    """Open and check the database. Raises :class:`StartupError` with a one-line reason."""
    if settings.is_sqlite:
        settings.instance_dir.mkdir(parents=True, exist_ok=True)
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


def start_embedded_demo(settings: Settings, database: Database) -> None:
    """HOOK for the embedded demo (paper exchange + engine + demo user/accounts): see algomirror.embedded.

    Called once before the web server starts, only when ``settings.demo`` is on. Starts the in-process
    paper exchange, seeds the demo user and accounts into an empty database, places the demo orders,
    starts the engine thread and prints where to sign in. A port in use stops start-up with one line.
    The services are stopped at interpreter exit.
    """
    import atexit

    from algomirror.embedded import EmbeddedStartError, demo_banner, start_embedded

    try:
        services = start_embedded(settings, database)
    except EmbeddedStartError as exc:
        database.dispose()
        _fail(str(exc))
    atexit.register(services.stop)
    print(demo_banner(settings, services), flush=True)


def serve(settings: Settings) -> None:
    """Check the database and serve the app on ``settings.host:settings.port`` until interrupted."""
    from waitress import serve as waitress_serve

    from algomirror.web import create_app

    configure_logging(settings)
    try:
        database = open_database(settings)
    except StartupError as exc:
        _fail(str(exc))
    # --- embedded demo hook (paper exchange + engine): see start_embedded_demo ----------------------
    if settings.demo:
        start_embedded_demo(settings, database)
    app = create_app(settings, database=database)
    log.info("AlgoMirror listening on http://%s:%s", settings.host, settings.port)
    try:
        waitress_serve(app, host=settings.host, port=settings.port, threads=8, ident="AlgoMirror")
    finally:
        database.dispose()
