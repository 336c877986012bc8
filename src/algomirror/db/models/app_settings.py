"""Installation-wide switches (``app_settings``): a tiny key/value table, e.g. ``signup_enabled``.

Not in the seeds: the original kept the sign-up switch in process memory, which neither survives a
restart nor works across several web processes.
"""

from __future__ import annotations

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from algomirror.db.base import Base, TimestampMixin

SIGNUP_ENABLED = "signup_enabled"
# The administrator's allow-list of account hosts (JSON, see algomirror.broker.hosts.HostPolicy); absent =
# any host. Read by the web pages and by the engine before it builds a client (algomirror.host_settings).
ACCOUNT_HOST_ALLOWLIST = "account_host_allowlist"
# Set by the engine when a component keeps crashing (value: the reason); no entry may be placed while
# it exists. Cleared by an operator (``algomirror.engine.halts.resume_entries``).
ENGINE_ENTRIES_HALTED = "engine_entries_halted"
# A counter bumped by every change to the trading calendar (templates, weekday sessions, holidays, special
# sessions): a running engine and every web process reload the calendar when it moves
# (algomirror.db.calendar_store).
CALENDAR_REVISION = "calendar_revision"


class AppSetting(TimestampMixin, Base):
    __tablename__ = "app_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
