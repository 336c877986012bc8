"""The schema `alembic upgrade head` builds is the schema the models declare, down to what autogenerate
cannot see: CHECK constraints, server defaults, foreign-key actions and partial-index predicates.

Both schemas are built for real (migrations on one empty database, ``metadata.create_all`` on another)
and compared through the database's own reflection, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect

from algomirror.db.migrate import downgrade_url, upgrade_url
from algomirror.db.models import Base
from tests.schema import private_pg_database


def _norm(sql: object) -> str:
    """Whitespace, redundant parentheses and PostgreSQL's casts do not make two definitions differ."""
    text = str(sql).lower()
    text = re.sub(r"::[a-z ]+(\[\])?", "", text)
    text = re.sub(r"[()\s]", "", text)
    return text


def _where(index: dict[str, Any]) -> str:
    options = index.get("dialect_options") or {}
    clause = options.get("sqlite_where")
    if clause is None:
        clause = options.get("postgresql_where")
    return "" if clause is None else _norm(clause)


def _snapshot(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        tables: dict[str, Any] = {}
        for table in sorted(set(insp.get_table_names()) - {"alembic_version"}):
            tables[table] = {
                "columns": sorted(
                    (
                        c["name"],
                        _norm(c["type"]),
                        bool(c["nullable"]),
                        _norm(c["default"]) if c.get("default") is not None else None,
                    )
                    for c in insp.get_columns(table)
                ),
                "pk": sorted(insp.get_pk_constraint(table)["constrained_columns"]),
                "fks": sorted(
                    (
                        fk["name"],
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        (fk.get("options") or {}).get("ondelete", "").upper() or "NO ACTION",
                    )
                    for fk in insp.get_foreign_keys(table)
                ),
                "uniques": sorted(
                    (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
                ),
                "checks": sorted((c["name"], _norm(c["sqltext"])) for c in insp.get_check_constraints(table)),
                "indexes": sorted(
                    (
                        ix["name"],
                        tuple(str(c) for c in ix["column_names"]),
                        bool(ix["unique"]),
                        _where(ix),
                    )
                    for ix in insp.get_indexes(table)
                    # PostgreSQL lists the index behind each unique constraint as well.
                    if not ix.get("duplicates_constraint")
                ),
            }
        return tables
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def two_empty_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}", f"sqlite:///{tmp_path / 'declared.db'}"
        return
    with private_pg_database("am_ddl_a") as first, private_pg_database("am_ddl_b") as second:
        yield first, second


def test_ddl_when_migrated_to_head_equals_the_models_ddl(two_empty_urls: tuple[str, str]) -> None:
    migrated_url, declared_url = two_empty_urls
    upgrade_url(migrated_url, "head")
    engine = create_engine(declared_url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()

    migrated, declared = _snapshot(migrated_url), _snapshot(declared_url)

    assert sorted(migrated) == sorted(declared)
    differences = {
        (table, part): {"migrated": migrated[table][part], "declared": declared[table][part]}
        for table in declared
        for part in declared[table]
        if migrated[table][part] != declared[table][part]
    }
    assert differences == {}


def test_ddl_when_upgraded_to_head_and_back_equals_revision_0001(two_empty_urls: tuple[str, str]) -> None:
    reference_url, round_trip_url = two_empty_urls
    upgrade_url(reference_url, "0001")
    upgrade_url(round_trip_url, "head")
    downgrade_url(round_trip_url, "0001")

    reference, round_trip = _snapshot(reference_url), _snapshot(round_trip_url)

    assert sorted(round_trip) == sorted(reference)
    differences = {
        (table, part): {"round_trip": round_trip[table][part], "reference": reference[table][part]}
        for table in reference
        for part in reference[table]
        if round_trip[table][part] != reference[table][part]
    }
    assert differences == {}
