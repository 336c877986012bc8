"""Declarative base with a constraint naming convention (stable Alembic diffs) and common mixins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import MetaData, event, func
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column
from sqlalchemy.orm.attributes import flag_modified, instance_state

from algomirror.db.types import UTCDateTime
from algomirror.domain.timeutil import utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CreatedAtMixin:
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, server_default=func.current_timestamp(), nullable=False
    )


class TimestampMixin(CreatedAtMixin):
    """created_at + updated_at; updated_at is refreshed by every ORM or Core UPDATE through SQLAlchemy,
    unless the code set it (an injected clock's time is kept even when it equals the stored one)."""

    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(),
        default=utcnow,
        onupdate=utcnow,
        server_default=func.current_timestamp(),
        nullable=False,
    )


@event.listens_for(TimestampMixin, "before_update", propagate=True)
def _keep_assigned_stamp(_mapper: Mapper[Any], _connection: Any, target: TimestampMixin) -> None:
    # The ORM leaves an assigned value equal to the stored one out of the UPDATE, and then the column's
    # onupdate stamps the wall clock instead: a demo or test clock that has not moved since the last
    # write (two syncs within one step of the paper exchange's clock) would get this computer's time.
    if "updated_at" in instance_state(target).committed_state:
        flag_modified(target, "updated_at")
