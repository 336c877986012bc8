"""Alerts a person must see and acknowledge, and drifts a person accepted.

``engine_alerts``: what the engine could not settle on its own (reconciliation found a position it cannot
explain, an exit failed its last attempt, a leg failed and was kept). An alert stays on the dashboard
until a person acknowledges it; acknowledging never changes trading state by itself.

``mirror_acceptances``: the mirror check (issue 11 item 12) compares each account's broker position with
what a run intended there; a person may accept a drift instead of correcting it. The row remembers the
quantities accepted, so a new, different drift shows again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from algomirror.db.base import Base, CreatedAtMixin
from algomirror.db.models.enums import in_check
from algomirror.db.types import UTCDateTime
from algomirror.domain.timeutil import utcnow

ALERT_SEVERITIES = ("info", "warning", "critical")


class EngineAlert(CreatedAtMixin, Base):
    """One thing a person has to look at. ``kind`` is a short code (``reconciliation``, ``exit_failed``,
    ``leg_failure``, …); ``title`` is one readable line, ``details`` the rest. Rows are kept after
    acknowledgement (history); they go with their user."""

    __tablename__ = "engine_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("trading_accounts.id", ondelete="RESTRICT"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("strategy_runs.id", ondelete="RESTRICT"))
    execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("strategy_executions.id", ondelete="RESTRICT")
    )
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    severity: Mapped[str] = mapped_column(
        String(10), default="warning", server_default="warning", nullable=False
    )
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    details: Mapped[str | None] = mapped_column(Text)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    __table_args__ = (
        Index("idx_engine_alerts_user_open", "user_id", "acknowledged_at"),
        in_check("severity", ALERT_SEVERITIES),
    )


class MirrorAcceptance(Base):
    """A drift a person accepted on one account for one run and one (symbol, product): the broker held
    ``broker_quantity`` (signed units) where the run intended ``intended_quantity``."""

    __tablename__ = "mirror_acceptances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    run_id: Mapped[int] = mapped_column(ForeignKey("strategy_runs.id", ondelete="RESTRICT"), nullable=False)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="RESTRICT"), nullable=False
    )
    symbol: Mapped[str] = mapped_column(String(100), nullable=False)
    exchange: Mapped[str] = mapped_column(String(20), nullable=False)
    product: Mapped[str] = mapped_column(String(10), nullable=False)
    broker_quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    intended_quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    __table_args__ = (Index("idx_mirror_acceptances_run_account", "run_id", "account_id"),)
