"""web → engine command queue (DESIGN §1): durable rows, processed exactly once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from algomirror.db.base import Base, TimestampMixin
from algomirror.db.models.enums import COMMAND_STATUSES, in_check
from algomirror.db.types import UTCDateTime


class EngineCommand(TimestampMixin, Base):
    """A user's request for the engine ("execute strategy 12", "exit leg 40").

    ``token`` is the idempotency key issued with the page (or built by the scheduler/webhook): inserting
    the same token twice fails, so a double click is one command. The engine claims a row with a
    conditional update ``pending → running`` (row count 1 wins) and ends it ``done`` or ``failed``.
    """

    __tablename__ = "engine_commands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # e.g. execute_strategy, exit_strategy, exit_leg, exit_execution, cancel_leg, modify_leg, kill_switch.
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(
        String(20), default="pending", server_default="pending", nullable=False
    )
    token: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("idx_engine_commands_status_created", "status", "created_at"),
        in_check("status", COMMAND_STATUSES),
    )
