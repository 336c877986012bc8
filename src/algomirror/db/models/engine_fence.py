"""The engine's fencing epoch (``engine_fence``): one row, bumped by every engine that takes the lock.

Not in the seeds. The single-instance lock keeps a second engine from starting; the epoch keeps a
*stale* one (whose lock was lost without it noticing yet) from writing: every order-journal write
checks, inside its own transaction, that the stored epoch is still the one its engine took.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from algomirror.db.base import Base
from algomirror.db.types import UTCDateTime

FENCE_ROW_ID = 1


class EngineFence(Base):
    """The single fencing row (``id`` is always 1). ``epoch`` only grows; ``holder`` is ``host:pid``."""

    __tablename__ = "engine_fence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    holder: Mapped[str | None] = mapped_column(String(200))
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("epoch >= 0", name="epoch_non_negative"),
    )
