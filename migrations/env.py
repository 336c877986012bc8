"""Alembic environment: metadata from algomirror.db.models; batch mode on SQLite."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from algomirror.db.models import Base
from algomirror.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                _configure_and_run(connection)
        finally:
            engine.dispose()
    else:
        _configure_and_run(connectable)


def _configure_and_run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
        compare_server_default=False,
    )
    if not sqlite:
        with context.begin_transaction():
            context.run_migrations()
        return
    # A batch migration rebuilds a table (create new, copy, drop old, rename). With foreign keys on,
    # dropping a parent table would cascade into its children, so they are switched off for the
    # migration (the pragma is ignored inside a transaction, hence on the driver connection first) and
    # checked once it is done, as SQLite's own procedure for schema changes prescribes.
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    if raw.execute("PRAGMA foreign_keys").fetchone() != (0,):
        # Still on: the connection was handed over inside a transaction. Rebuilding a parent table now
        # would cascade-delete its children, so refuse.
        raise RuntimeError("cannot switch SQLite foreign keys off for the migration (inside a transaction?)")
    try:
        with context.begin_transaction():
            context.run_migrations()
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left rows violating foreign keys: {broken[:5]}")
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
