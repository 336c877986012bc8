"""``algomirror …`` command line. Thin: each command delegates to its package.

Errors a user can act on (bad settings, unreachable database) print one line and exit 2; no traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from algomirror.config import Settings, SettingsError, load_settings


def fail(message: str) -> NoReturn:
    click.echo(f"algomirror: {message}", err=True)
    sys.exit(2)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc))


@click.group()
@click.version_option(package_name="algomirror")
def main() -> None:
    """AlgoMirror: one options strategy on many OpenAlgo accounts."""


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

    settings = settings_or_exit()
    url = settings.effective_database_url
    if settings.is_sqlite:
        settings.instance_dir.mkdir(parents=True, exist_ok=True)
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
